"""Frame and angle errors against the phantom's truth (used by the tests; run as a script to measure).

    python -m tests.clinical.truthcheck --seeds 985000 20 [--found | --model | --cut MM] [--ct-model rtk] [--no-image]
"""

from __future__ import annotations

import argparse

import numpy as np

from cochseg3d.clinical.frame import angles_and_depths, estimate_frame


def errors(truth: dict, lps_mm: np.ndarray, centreline: np.ndarray | None, image=None) -> dict:
    """Axis error (deg), per-contact angle / depth errors against ``truth`` (a phantom's contacts dict);
    with ``image`` the round window is measured on it too, as ``segment`` does."""
    f = estimate_frame(lps_mm, centreline, image=image)
    if not f.ok:
        return {"ok": False, "reason": f.reason}
    tf = truth["cochlear_frame"]
    z_err = float(np.degrees(np.arccos(np.clip(f.z @ np.asarray(tf["z_lps"]), -1, 1))))
    x_err = float(np.degrees(np.arccos(np.clip(f.x @ np.asarray(tf["x_lps"]), -1, 1))))
    ang, dep = angles_and_depths(f, lps_mm)
    out = {"ok": True, "z_err_deg": z_err, "x_err_deg": x_err, "confidence": f.confidence,
           "origin_err_mm": float(np.linalg.norm(f.origin - np.asarray(tf["origin_lps_mm"]))),
           "sense_ok": f.turn_sense == tf["turn_sense"]}
    if len(lps_mm) == len(truth["contacts_lps_mm"]):
        out["angle_err_deg"] = ang - np.asarray(truth["contact_angles_deg"])
        out["depth_err_mm"] = dep - np.asarray(truth["contact_depths_mm"])
    return out


def _cut_inside(case, cut_mm: float = 2.5):
    """A phantom's truth with its path cut ``cut_mm`` inside the round window, as a label that ends at
    its last contact is, and the contacts beyond the cut dropped with it: (truth, contacts, path)."""
    from cochseg3d.contacts.centreline import cumulative_arc

    c = case.contacts
    path, pts = np.asarray(c["electrode_path_lps_mm"]), np.asarray(c["contacts_lps_mm"])
    depth = np.asarray(c["contact_depths_mm"])
    s = cumulative_arc(path)
    near = np.argmin(np.linalg.norm(path[:, None] - pts[None], axis=2), axis=0)
    s_rw = float(np.median(s[near] + depth))
    keep, inside = s <= s_rw - cut_mm, depth >= cut_mm
    truth = {**c, "contact_angles_deg": np.asarray(c["contact_angles_deg"])[inside].tolist(),
             "contact_depths_mm": depth[inside].tolist()}
    return truth, pts[inside], path[keep]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", nargs=2, type=int, default=[985000, 20])
    ap.add_argument("--found", action="store_true", help="contacts found on the truth label (named electrode)")
    ap.add_argument("--model", action="store_true", help="contacts the default model finds (segment, named electrode)")
    ap.add_argument("--ct-model", default="fast", choices=["fast", "rtk"])
    ap.add_argument("--no-image", action="store_true", help="the round window from the centreline's shape alone")
    ap.add_argument("--cut", type=float, help="the true path cut this many mm inside the round window")
    a = ap.parse_args()
    if a.model:
        from cochseg3d.inference import load_model

        net = load_model()[0]
    from cochseg3d.phantom import generate_patient

    rows = []
    for seed in range(a.seeds[0], a.seeds[0] + a.seeds[1]):
        case = generate_patient(seed, ct_model=a.ct_model)
        image = None if a.no_image else case.image
        c = case.contacts
        if a.model:
            import cochseg3d

            fc = cochseg3d.segment(case.image, model=net, electrode=c["model"], qc=False, device="cpu").contacts
            e = errors(c, fc.lps_mm, fc.centreline_lps_mm, image)
        elif a.found:
            from cochseg3d.contacts import find_contacts

            fc = find_contacts(case.label, case.image, electrode=c["model"])
            e = errors(c, fc.lps_mm, fc.centreline_lps_mm, image)
        elif a.cut is not None:
            e = errors(*_cut_inside(case, a.cut), image)
        else:
            e = errors(c, np.asarray(c["contacts_lps_mm"]), np.asarray(c["electrode_path_lps_mm"]), image)
        rows.append(e)
        if not e["ok"]:
            print(seed, c["model"], "FAILED", e["reason"])
            continue
        ae = e.get("angle_err_deg", np.array([np.nan]))
        de = e.get("depth_err_mm", np.array([np.nan]))
        print(f"{seed} {c['model']:22s} aid {c['insertion_angle_deg']:6.1f} z {e['z_err_deg']:5.2f}"
              f" x {e['x_err_deg']:5.1f} o {e['origin_err_mm']:4.2f} conf {e['confidence']:.2f} sense {e['sense_ok']}"
              f" ang mean|max {np.abs(ae).mean():5.1f} {np.abs(ae).max():5.1f}"
              f" depth {np.abs(de).mean():4.2f} {np.abs(de).max():4.2f}")
    ok = [r for r in rows if r["ok"]]
    z = np.array([r["z_err_deg"] for r in ok])
    ang = np.concatenate([np.abs(r["angle_err_deg"]) for r in ok if "angle_err_deg" in r] or [np.array([np.nan])])
    dep = np.concatenate([np.abs(r["depth_err_mm"]) for r in ok if "depth_err_mm" in r] or [np.array([np.nan])])
    print(f"N {len(rows)} ok {len(ok)}; z axis mean {z.mean():.2f} max {z.max():.2f} deg; contact angle mean "
          f"{ang.mean():.2f} p95 {np.percentile(ang, 95):.2f} max {ang.max():.2f} deg; depth mean {dep.mean():.3f} "
          f"max {dep.max():.3f} mm")


if __name__ == "__main__":
    main()
