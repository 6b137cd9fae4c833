"""Clinical measures of an implanted array in the cochlear coordinate system (issue 13).

* :mod:`.frame` - the consensus cochlear frame (Verbist et al. 2010) fitted to the array's spiral.
* :mod:`.measures` - per-contact angle, depth, axis distance, inside, frequency; the ``arrays`` record.
* :mod:`.flags` - fold-over, kink, out of order, each with its evidence.
* :mod:`.frequency` - Greenwood (1990) organ-of-Corti and Stakhovskaya (2007) spiral-ganglion maps.
* :mod:`.markups` - 3D Slicer markups (.mrk.json), the per-contact CSV and the cohort CSV row.
"""

from cochseg3d.clinical.frame import CochlearFrame, estimate_frame
from cochseg3d.clinical.measures import measure_array, measure_arrays

__all__ = ["CochlearFrame", "estimate_frame", "measure_array", "measure_arrays"]
