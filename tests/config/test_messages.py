import pytest

from veltrix_ray.config import load_config
from veltrix_ray.errors import ConfigError

pytestmark = pytest.mark.unit


def test_a_typo_lists_the_valid_keys_instead_of_suggesting_to_append() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(["topology.wrokers=3"])
    message = str(info.value)
    assert "topology.wrokers" in message
    assert "Keys of topology: name, address, workers," in message
    assert "+topology.wrokers" not in message


def test_an_unknown_group_option_lists_only_real_options() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(["pipeline=nope"])
    message = str(info.value)
    assert "events" in message and "user_totals" in message
    assert "schema" not in message and "search path" not in message
