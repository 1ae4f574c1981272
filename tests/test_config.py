from dataclasses import dataclass
from typing import Literal

import pytest

from pipeline.config import build_config, config_to_dict, from_dict, read_yaml, save_config
from pipeline.errors import ConfigError


@dataclass(frozen=True)
class Toy:
    name: str = "a"
    epochs: int = 3
    lr: float = 0.1
    amp: bool = False
    segments: tuple[int, ...] = (8,)
    kind: Literal["pooled", "spatial"] = "pooled"
    limit: int | None = None


def test_defaults_then_yaml_then_overrides(tmp_path):
    file = tmp_path / "c.yaml"
    file.write_text("epochs: 5\nlr: 0.01\nsegments: [8, 16]\n")
    cfg = build_config(Toy, file, {"lr": "0.5", "amp": "true", "name": None})
    assert cfg == Toy(name="a", epochs=5, lr=0.5, amp=True, segments=(8, 16))


def test_unknown_key_is_named_with_its_file(tmp_path):
    file = tmp_path / "c.yaml"
    file.write_text("epochs: 5\nepoch: 4\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: unknown key 'epoch' for Toy"):
        build_config(Toy, file)


@pytest.mark.parametrize(
    "data, message",
    [
        ({"epochs": "three"}, "epochs: expected an integer"),
        ({"epochs": 2.5}, "epochs: expected an integer"),
        ({"amp": "maybe"}, "amp: expected true/false"),
        ({"kind": "both"}, "kind: 'both' is not one of"),
        ({"lr": [1]}, "lr: expected a number"),
    ],
)
def test_wrong_types_are_rejected(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(Toy, data)


def test_comma_separated_tuples_and_optional():
    cfg = from_dict(Toy, {"segments": "8,16", "limit": "7"})
    assert cfg.segments == (8, 16) and cfg.limit == 7
    assert from_dict(Toy, {"limit": None}).limit is None


def test_save_and_reload_round_trip(tmp_path):
    cfg = Toy(epochs=9, segments=(4, 8), kind="spatial")
    path = save_config(cfg, tmp_path / "out" / "config.yaml")
    assert from_dict(Toy, read_yaml(path)) == cfg
    assert config_to_dict(cfg)["segments"] == [4, 8]


def test_bad_yaml_names_file_and_line(tmp_path):
    file = tmp_path / "bad.yaml"
    file.write_text("epochs: 3\nlr: [1,\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:\d+: invalid YAML"):
        read_yaml(file)
    file.write_bytes(b"epochs: \xff\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        read_yaml(file)
    file.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        read_yaml(file)


def test_saved_configs_never_hold_credentials(tmp_path):
    from dataclasses import field

    @dataclass(frozen=True)
    class WithOptions:
        output: str = "s3://b/x.zarr"
        storage_options: dict = field(default_factory=dict)

    cfg = WithOptions(storage_options={"key": "AKIA123", "secret": "s3cr3t", "endpoint_url": "http://127.0.0.1:9",
                                       "client_kwargs": {"aws_session_token": "T0KEN-VALUE"}})
    text = save_config(cfg, tmp_path / "config.yaml").read_text()
    assert "AKIA123" not in text and "s3cr3t" not in text and "T0KEN-VALUE" not in text
    assert "http://127.0.0.1:9" in text
