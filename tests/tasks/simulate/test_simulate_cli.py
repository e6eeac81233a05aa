import argparse

import pytest

from tasks.cli import main as pipeline_main
from tasks.data.layout import DataLayout
from tasks.simulate.cli import config_from_args, configure_parser


def _parse(argv):
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    return parser.parse_args(argv)


def test_cli_writes_a_survey_and_refuses_a_non_empty_directory(tmp_path, capsys):
    root = tmp_path / "data"
    argv = [
        "simulate",
        str(root),
        "--preset",
        "tiny",
        "--visits",
        "2",
        "--static",
        "60",
        "--detector-size",
        "160",
        "120",
        "--bands",
        "r",
    ]
    assert pipeline_main(argv) == 0
    layout = DataLayout(root)
    assert len(layout.visits()) == 2
    assert set(layout.read_visit_table()["band"]) == {"r"}
    assert layout.read_exposure(layout.visits()[0], 0).image.shape == (120, 160)
    assert "wrote 2 visits" in capsys.readouterr().out
    assert pipeline_main(argv) == 2
    assert "not empty" in capsys.readouterr().err


def test_config_from_args_layers_preset_file_and_options(tmp_path):
    cfg_file = tmp_path / "sim.yaml"
    cfg_file.write_text("n_static: 77\nseed: 5\n")
    cfg = config_from_args(
        _parse([str(tmp_path), "--preset", "tiny", "--config", str(cfg_file), "--seed", "9"])
    )
    assert (cfg.n_static, cfg.seed, cfg.n_detectors) == (77, 9, 1)
    assert config_from_args(_parse([str(tmp_path), "--preset", "benchmark"])).detector_size == (
        4096,
        4096,
    )


def test_cli_rejects_bad_configuration(tmp_path, capsys):
    assert pipeline_main(["simulate", str(tmp_path / "x"), "--bands", "gw"]) == 2
    assert "invalid configuration" in capsys.readouterr().err
    for text, reason in [
        ("n_visits: [\n", "expected the node content"),
        ("n_visits: 0\n", "n_visits"),
    ]:
        (tmp_path / "bad.yaml").write_text(text)
        assert (
            pipeline_main(["simulate", str(tmp_path / "x"), "--config", str(tmp_path / "bad.yaml")])
            == 2
        )
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and reason in err, err
    assert not (tmp_path / "x").exists()
    with pytest.raises(SystemExit):
        pipeline_main(["simulate"])
