"""InstantID engine: face records -> identity tokens -> attention patch + IdentityNet control.

Usable without the nodes; everything that touches ComfyUI imports it lazily
or through the host's own modules, so the engine runs wherever ComfyUI runs.
"""
