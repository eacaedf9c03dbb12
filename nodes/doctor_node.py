"""The 'InstantID Doctor' node: the install checks of ``instantid.doctor`` as a report in the UI."""

from __future__ import annotations

from comfy_api.latest import io, ui

from ..instantid import doctor
from .types import CATEGORY


class InstantIDDoctor(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="InstantIDDoctor",
            display_name="InstantID Doctor",
            category=CATEGORY,
            description="Checks the setup: ComfyUI version, torch/CUDA, insightface, onnxruntime, OpenCV, numpy, and every model "
            "file InstantID needs (present, the published size and sha256, the right kind: IdentityNet is found by its tensors, "
            "whatever its name). Each problem comes with its fix.",
            is_output_node=True,
            inputs=[
                io.Boolean.Input("deep", default=False, tooltip="Also check the sha256 of IdentityNet and the antelopev2 files "
                                 "(reads 2.8 GB) and unpickle a large adapter .bin of another size to check its keys. Off: sizes, "
                                 "safetensors headers, and the adapter's sha256 (which loading it checks anyway)."),
            ],
            outputs=[io.String.Output(display_name="report", tooltip="The findings as text, one per line with its fix.")],
        )

    @classmethod
    def fingerprint_inputs(cls, deep: bool) -> float:
        return float("nan")  # never cached: files and packages change between runs

    @classmethod
    def execute(cls, deep: bool) -> io.NodeOutput:
        report = doctor.format_report(doctor.run_checks(deep=deep))
        return io.NodeOutput(report, ui=ui.PreviewText(report))


DOCTOR_NODES: list[type[io.ComfyNode]] = [InstantIDDoctor]
