"""``benchmarks/meta_epoch.py`` on a tiny zoo: every spec gets a row, and the ratio column refers
to the first NFN spec also when it carries a configuration (``nfn:{...}``)."""

import json

from wskan_ext.tasks.testing import tiny_zoo


def test_meta_epoch_rows_and_ratio_to_a_configured_nfn(tmp_path, load_script):
    zoo = tiny_zoo(str(tmp_path), "sine")
    me = load_script("benchmarks/meta_epoch.py", "wskan_meta_epoch_script")
    out, md = tmp_path / "m.json", tmp_path / "m.inc"
    assert me.main(["--zoo", zoo, "--task", "sine", "--batch-size", "4", "--epochs", "1", "--out", str(out),
                    "--md", str(md), 'nfn:{"hidden": 8}', 'wskan:{"hidden": 8, "lookup": 2, "layernorm": false}']) == 0
    rows = json.load(open(out))["rows"]
    assert [r["model"] for r in rows] == ['nfn:{"hidden": 8}', 'wskan:{"hidden": 8, "lookup": 2, "layernorm": false}']
    assert all(r["epoch_s"] > 0 and r["params"] > 0 for r in rows)
    lines = [ln for ln in open(md).read().splitlines() if ln.strip().startswith(("nfn:", "wskan:"))]
    ratios = [ln.split("}")[-1].split()[1] for ln in lines]  # s/epoch, then x NFN
    assert ratios[0] == "1.0" and ratios[1] != "-"
