#!/usr/bin/env bash
# Builds .venv-other: the test environment with the OTHER supported insightface,
# for `make test-full`. The pack supports insightface 0.7.3 (source archive,
# needs a C++ compiler) and 2.x (pure-Python wheel, what a fresh
# `pip install -r requirements.txt` picks). .venv has one of them; .venv-other
# holds only the other one and what it needs besides, and reads everything
# else (torch, ComfyUI's packages, pytest) from .venv through a .pth file, so
# it costs megabytes, not a second torch.
#
# Environment: VENV (default .venv), OTHER_VENV (default .venv-other).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
OTHER=${OTHER_VENV:-.venv-other}
VPY="$VENV/bin/python"
# The two versions the tests run on (keep in step with instantid/face_models.py TESTED_INSIGHTFACE).
OLD=0.7.3
NEW=2.1

installed=$("$VPY" -c "import importlib.metadata as m; print(m.version('insightface'))")
if [ "$installed" = "$OLD" ]; then other=$NEW; else other=$OLD; fi

if [ -x "$OTHER/bin/python" ] && [ "$(cat "$OTHER/.insightface" 2>/dev/null)" = "$other" ]; then
  echo "insightface $other in $OTHER (beside $installed in $VENV)"
  exit 0
fi
if [ "$other" = "$OLD" ] && ! command -v c++ >/dev/null; then
  echo "insightface $OLD builds from source and needs a C++ compiler (apt-get install g++ / Xcode / MSVC Build Tools)." >&2
  exit 1
fi

rm -rf "$OTHER"
base=$("$VPY" -c "import sys; print(sys._base_executable)")  # the interpreter $VENV was made from
"$base" -m venv "$OTHER"
main_site=$("$VPY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
other_site=$("$OTHER/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
main_site=$(cd "$main_site" && pwd -P)
# Lines starting with "import" in a .pth file are run by site.py: addsitedir appends $VENV's packages after this
# venv's own (so the other insightface and its extras win) and processes $VENV's own .pth files too.
echo "import site; site.addsitedir('$main_site')" > "$other_site/zz-instantid-main-venv.pth"
"$OTHER/bin/python" -m pip install --quiet "insightface==$other"
echo "$other" > "$OTHER/.insightface"
"$OTHER/bin/python" -c "import insightface, torch; print('insightface', insightface.__version__, 'in $OTHER; torch', torch.__version__, 'from $VENV')"
