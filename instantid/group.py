"""Several identities in one image, in one step: the single-identity path once per person.

Each person of a :class:`~instantid.regions.GroupLayout` goes through
``pipeline.apply_instantid`` with their own face, keypoint image and mask.
That already composes: a face-attention patch keeps the one registered before
it at each of the 70 layers (so person 2's attention is added to person 1's,
each multiplied by its own mask at every attention resolution), and each
IdentityNet is chained after the ControlNets already on the conditioning (so
IdentityNet runs once per person per step, with that person's face tokens and
keypoints, and its residuals multiplied by that person's mask).

Cost per extra person, per sampling step: one more IdentityNet pass (about
0.44 of an SDXL UNet call by FLOPs, spec section 9) plus one 16-token
attention branch in each of the 70 layers (about 0.1-0.3% of the UNet).
``make bench`` measures it.
"""

from __future__ import annotations

import logging

from .adapter import InstantIDAdapter
from .attention import check_model
from .identitynet import check_controlnet
from .pipeline import apply_instantid
from .regions import GroupLayout

log = logging.getLogger(__name__)


def apply_group(model, positive, negative, adapter: InstantIDAdapter, control_net, layout: GroupLayout,
                ip_weight: float, cn_strength: float, start_at: float = 0.0, end_at: float = 1.0):
    """(model, positive, negative) with every person of ``layout`` applied; the inputs are never modified.

    Model and ControlNet are checked once, before anything is built, so a bad
    input patches nothing.
    """
    check_model(model, adapter)
    check_controlnet(control_net, adapter.config.output_dim)
    for person in layout.people:
        model, positive, negative = apply_instantid(
            model, positive, negative, adapter, control_net, person.identity, person.keypoint_image,
            ip_weight, cn_strength, start_at, end_at, mask=person.mask)
    log.debug("InstantID group: %d identities applied at %dx%d", len(layout.people), layout.width, layout.height)
    return model, positive, negative
