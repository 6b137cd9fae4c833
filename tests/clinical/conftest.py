"""Phantoms shared by the clinical tests (fast CT model, small preset)."""

from __future__ import annotations

import numpy as np
import pytest

from cochseg3d.contacts import Contacts
from cochseg3d.phantom import generate_patient


def truth_contacts(case) -> Contacts:
    """The phantom's true contacts with the true array path as the centreline."""
    c = case.contacts
    return Contacts(np.asarray(c["contacts_lps_mm"]), "truth", np.asarray(c["electrode_path_lps_mm"]),
                    info={"model": c["model"]})


@pytest.fixture(scope="session")
def flex_case():
    return generate_patient(31, model="FLEX28")
