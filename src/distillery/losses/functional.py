"""Loss math (API.md section 1): one pure function per method, tensors in, unweighted 0-d tensor out.

The functions are implemented next to their source codebase in ``distillery.losses.math.*`` and
re-exported here, which is the public, contract-checked import path.
"""

from distillery.losses.math._placeholder import kd_loss
from distillery.losses.math.d3still import (cc_loss, csd_loss, d3still_loss, fitnet_loss, pkt_loss, raml_loss,
                                            rkd_loss, rop_loss, triplet_loss, ugd_loss)

__all__ = ["cc_loss", "csd_loss", "d3still_loss", "fitnet_loss", "kd_loss", "pkt_loss", "raml_loss", "rkd_loss",
           "rop_loss", "triplet_loss", "ugd_loss"]
