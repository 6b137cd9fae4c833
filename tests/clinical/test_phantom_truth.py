"""Phantom truth for the clinical measures: the consensus cochlear frame, depth and axis distance."""

from __future__ import annotations

import numpy as np
import pytest

from cochseg3d.phantom import generate_patient


@pytest.mark.parametrize("seed", [11, 5])
def test_truth_frame_angles_and_depths(seed):
    c = generate_patient(seed).contacts
    f = c["cochlear_frame"]
    R = np.array([f["x_lps"], f["y_lps"], f["z_lps"]])
    assert np.allclose(R @ R.T, np.eye(3), atol=1e-5)
    assert np.linalg.det(R) == pytest.approx(1.0, abs=1e-5)  # right-handed
    assert f["turn_sense"] in (-1, 1)
    pts = np.asarray(c["contacts_lps_mm"])
    q = (pts - np.asarray(f["origin_lps_mm"])) @ R.T
    # the angle about z, in the turning sense, agrees with the stored cumulative angle (mod 360)
    phi = np.degrees(np.arctan2(f["turn_sense"] * q[:, 1], q[:, 0]))
    diff = (phi - np.asarray(c["contact_angles_deg"]) + 180) % 360 - 180
    assert np.abs(diff).max() < 0.01
    assert np.allclose(np.hypot(q[:, 0], q[:, 1]), c["contact_modiolus_distance_mm"], atol=1e-3)
    # depth from the round window: one pitch per contact, positive exactly for intracochlear ones
    d = np.asarray(c["contact_depths_mm"])
    assert np.allclose(-np.diff(d), c["pitch_mm"], atol=1e-3)
    assert np.array_equal(d >= 0, np.asarray(c["inside_cochlea"]))
    # the apex lies along +z: the apical contact above the basal one
    assert q[0, 2] > q[-1, 2]
