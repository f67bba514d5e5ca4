"""Loss math (API.md section 1): one pure function per method, tensors in, unweighted 0-d tensor out.

The functions are implemented next to their source codebase in ``distillery.losses.math.*`` (d3still,
mdistiller, sdd, whiten_mtd, s2sd) and re-exported here, which is the public, contract-checked import path.
Where two codebases define the same loss (kd, fitnet, rkd, pkt) one function serves both (see its docstring).
"""

from distillery.losses.math.d3still import (cc_loss, csd_loss, d3still_loss, fitnet_loss, pkt_loss, raml_loss,
                                            rkd_loss, rop_loss, triplet_loss, ugd_loss)
from distillery.losses.math.mdistiller import (at_loss, dkd_loss, hcl_loss, kd_loss, kdsvd_loss, nst_loss, ofd_loss,
                                               sp_loss, vid_loss)
from distillery.losses.math.s2sd import multisimilarity_loss, similarity_kl_loss
from distillery.losses.math.sdd import nkd_loss, sdd_dkd_loss, sdd_kd_loss, sdd_nkd_loss
from distillery.losses.math.whiten_mtd import whitened_similarity_loss

__all__ = ["at_loss", "cc_loss", "csd_loss", "d3still_loss", "dkd_loss", "fitnet_loss", "hcl_loss", "kd_loss",
           "kdsvd_loss", "multisimilarity_loss", "nkd_loss", "nst_loss", "ofd_loss", "pkt_loss", "raml_loss",
           "rkd_loss", "rop_loss", "sdd_dkd_loss", "sdd_kd_loss", "sdd_nkd_loss", "similarity_kl_loss", "sp_loss",
           "triplet_loss", "ugd_loss", "vid_loss", "whitened_similarity_loss"]
