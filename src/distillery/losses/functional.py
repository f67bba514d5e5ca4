"""Loss math (API.md section 1): one pure function per method, tensors in, unweighted 0-d tensor out.

The functions are implemented next to their source codebase in ``distillery.losses.math.*`` and
re-exported here, which is the public, contract-checked import path.
"""

from distillery.losses.math._placeholder import fitnet_loss, kd_loss, pkt_loss, rkd_loss, triplet_loss

__all__ = ["fitnet_loss", "kd_loss", "pkt_loss", "rkd_loss", "triplet_loss"]
