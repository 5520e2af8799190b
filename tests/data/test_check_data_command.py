"""``mmalign check-data``: summary JSON, exit status 1 past the bad fraction, 2 on structural errors."""

import json

from PIL import Image

from mmalign.cli import main
from mmalign.data import write_pickapic_parquet


def test_check_data_reports_counts_and_locations(tmp_path, solid, capsys):
    rows = [{"caption": f"p{k}", "jpg_0": solid(2 * k), "jpg_1": solid(2 * k + 1), "label_0": [1, 0, 0.5, 1][k]}
            for k in range(4)]
    rows[3]["jpg_1"] = Image.new("RGB", (1, 1))
    path = write_pickapic_parquet(rows, tmp_path / "train-0.parquet")
    assert main(["check-data", str(tmp_path), "--max-bad-fraction", "0.5"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["rows_read"], out["dropped_tie"], out["items"], out["bad_samples"]) == (4, 1, 3, 1)
    assert out["bad"] == [f"{path}, row 3, field 'jpg_1': image is 1x1, smaller than min_image_size=16"]
    assert main(["check-data", str(tmp_path)]) == 1
    assert "max_bad_fraction=1.00%" in json.loads(capsys.readouterr().out)["error"]
    rows[0]["label_0"] = 3
    write_pickapic_parquet(rows, path)
    assert main(["check-data", str(path)]) == 2
    assert f"{path}, row 0, field 'label_0'" in capsys.readouterr().err
