"""Config loading, and `veltrix-ray check` against the real Kafka and PostgreSQL: every
misconfiguration the check knows yields a finding naming the key and the fix, and secrets never
reach the terminal in clear."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from veltrix_ray import cli
from veltrix_ray.check import run_checks
from veltrix_ray.check.pipeline import launch_findings
from veltrix_ray.config import load_config, to_settings
from veltrix_ray.config.validate import Finding
from veltrix_ray.errors import ConfigError

SECRET = "s3cr3t-pw"


def _check(*overrides: str) -> list[Finding]:
    return run_checks(to_settings(load_config(list(overrides))))


def _one(findings: list[Finding], level: str, key: str) -> Finding:
    hits = [f for f in findings if f.level == level and f.key == key]
    assert hits, f"no {level} {key} among:\n" + "\n".join(map(str, findings))
    return hits[0]


def _keys(findings: list[Finding], level: str) -> set[str]:
    return {f.key for f in findings if f.level == level}


@pytest.fixture
def login_role(services: object, pg_dsn: str) -> Iterator[str]:
    """A fresh login role without any grants. Roles are server-wide: it is dropped afterwards,
    with whatever it was granted in the test database."""
    name = f"r_{uuid.uuid4().hex[:10]}"
    admin = services.dsn  # type: ignore[attr-defined]
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
    yield name
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


# -- loading --------------------------------------------------------------------------------


@pytest.mark.parametrize("topology", ["local", "single_node", "cluster"])
@pytest.mark.parametrize("pipeline", ["events", "user_totals"])
def test_every_group_option_loads_and_validates(pipeline: str, topology: str) -> None:
    overrides = [f"pipeline={pipeline}", f"topology={topology}"]
    if topology == "cluster":
        overrides.append("topology.address=ray://x:10001")
    settings = to_settings(load_config(overrides))
    assert settings.pipeline.name == pipeline and settings.topology.name == topology
    assert _keys(launch_findings(settings), "error") == set()


@pytest.mark.unit
@pytest.mark.parametrize(("key", "bad", "allowed"), [
    ("pipeline.mode", "merge", "append, upsert"),
    ("pipeline.on_transform_error", "skip", "dead_letter, stop"),
    ("topology.placement", "spread", "PACK, SPREAD"),
    ("until", "done", "forever, drained"),
])
def test_a_closed_choice_fails_at_compose_time_naming_the_key_and_the_choices(
        key: str, bad: str, allowed: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config([f"{key}={bad}"])
    assert f"Invalid value '{bad}', expected one of [{allowed}]" in str(info.value)
    assert f"full_key: {key}" in str(info.value)


@pytest.mark.unit
def test_every_choice_is_named_by_its_value() -> None:
    """OmegaConf reads YAML and overrides by member name; the name is what `config show`
    prints, and what the member hashes as beside its string."""
    from veltrix_ray.config import schema

    choices = [c for c in vars(schema).values()
               if isinstance(c, type) and issubclass(c, schema.Choice) and c is not schema.Choice]
    assert len(choices) >= 11
    for choice in choices:
        for member in choice:
            assert member.name == member.value == str(member) == f"{member}", member
            assert {member.value: True}[member]


@pytest.mark.unit
@pytest.mark.parametrize(("column", "key", "allowed"), [
    ("{name:a,type:float}", "type", "int64, float64, string, bool"),
    ("{name:a,type:string,source:kye}", "source", "value, key"),
])
def test_a_bad_column_choice_names_the_columns_key(column: str, key: str, allowed: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config([f"pipeline.columns=[{column}]"])
    assert f"full_key: pipeline.columns[].{key}" in str(info.value)
    assert f"expected one of [{allowed}" in str(info.value)


@pytest.mark.unit
def test_choices_are_plain_values_in_settings_and_in_config_show(
        capsys: pytest.CaptureFixture[str]) -> None:
    settings = to_settings(load_config(["kafka.topic=t", "pipeline=user_totals",
                                        "kafka.security_protocol=SASL_SSL"]))
    assert settings.pipeline.mode == "upsert" and f"{settings.pipeline.mode}" == "upsert"
    assert str(settings.kafka.security_protocol) == "SASL_SSL"
    assert cli.main(["config", "show", "kafka.topic=t", "pipeline=user_totals",
                     "kafka.security_protocol=SASL_SSL"]) == 0
    shown = capsys.readouterr().out
    assert "mode: upsert" in shown and "security_protocol: SASL_SSL" in shown
    assert "Mode." not in shown and "SecurityProtocol" not in shown


def test_a_typo_in_a_key_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"topology\.wrokers"):
        load_config(["topology.wrokers=3"])


def test_a_wrong_type_names_the_key_and_the_value() -> None:
    with pytest.raises(ConfigError, match=r"topology\.workers") as info:
        load_config(["topology.workers=abc"])
    assert "abc" in str(info.value)


def test_a_missing_group_option_names_the_options() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(["pipeline=nope"])
    assert "pipeline/nope" in str(info.value)
    assert "events" in str(info.value) and "user_totals" in str(info.value)


# -- a config that fits ---------------------------------------------------------------------


def test_a_fitting_config_passes_every_area(pg_dsn: str, new_topic: Callable[[int], str],
                                            monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("VELTRIX_POSTGRES_DSN", pg_dsn)
    topic = new_topic(4)
    assert cli.main(["check", f"kafka.topic={topic}", "topology.workers=2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines] == [
        ["ok", f"{area}:"] for area in
        ("config", "kafka", "postgres", "ray", "memory", "dead_letters")], lines
    assert f"ok      kafka: topic {topic} has 4 partitions for 2 workers" in lines
    assert any("public.events does not exist yet and will be created" in x for x in lines)


# -- Kafka ----------------------------------------------------------------------------------


def test_missing_topic_suggests_producing_it() -> None:
    topic = f"missing-{uuid.uuid4().hex[:8]}"
    f = _one(_check(f"kafka.topic={topic}"), "error", "kafka.topic")
    assert f"veltrix-ray produce --topic {topic}" in f.message


def test_unreachable_kafka_names_the_bootstrap() -> None:
    findings = _check("kafka.bootstrap=127.0.0.1:1")
    f = _one(findings, "error", "kafka.bootstrap")
    assert "127.0.0.1:1" in f.message and "fix kafka.bootstrap" in f.message
    assert "kafka.topic" not in _keys(findings, "error")  # not blamed on the topic


def test_more_workers_than_partitions_warns_and_only_counts_the_workers_that_start(
        new_topic: Callable[[int], str]) -> None:
    topic = new_topic(2)
    findings = _check(f"kafka.topic={topic}", "topology.workers=64")
    f = _one(findings, "warning", "topology.workers")
    assert "only 2 workers start" in f.message and "topology.workers=2" in f.message
    # two actors start, one per partition: they fit the machine
    assert "topology.workers" not in _keys(findings, "error")
    assert "ray" in _keys(findings, "ok")


def test_uneven_partition_sets_warn_with_divisors(new_topic: Callable[[int], str]) -> None:
    topic = new_topic(9)
    f = _one(_check(f"kafka.topic={topic}", "topology.workers=8", "topology.num_cpus=0.1"),
             "warning", "topology.workers")
    assert "9 partitions over 8 workers" in f.message and "2x the work" in f.message
    assert "(3 or 9)" in f.message


# -- PostgreSQL -----------------------------------------------------------------------------


def test_unreachable_postgres_says_to_start_it_or_fix_host_and_port(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VELTRIX_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:1/postgres")
    f = _one(_check(), "error", "postgres.dsn")
    assert "cannot connect to PostgreSQL at 127.0.0.1:1" in f.message
    assert "fix the host and port in postgres.dsn" in f.message


def test_failed_authentication_names_the_role(pg_dsn: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    role = f"nobody_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("VELTRIX_POSTGRES_DSN", make_conninfo(pg_dsn, user=role))
    f = _one(_check(), "error", "postgres.dsn")
    assert f"role {role} does not exist" in f.message
    assert "fix the user in postgres.dsn" in f.message


def test_missing_create_privilege_names_the_grant(pg_dsn: str, login_role: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    monkeypatch.setenv("VELTRIX_POSTGRES_DSN", make_conninfo(pg_dsn, user=login_role))
    findings = _check()
    f = _one(findings, "error", "postgres.dsn")
    assert "CREATE on schema public" in f.message
    assert f"GRANT CREATE ON SCHEMA public TO {login_role}" in f.message
    with psycopg.connect(pg_dsn) as conn:  # the probe left nothing behind
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE tablename LIKE "
                            "'\\_veltrix\\_check\\_%'").fetchone() == (0,)


def test_missing_table_privileges_name_the_grant(pg_dsn: str, login_role: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE user_latest (user_id bigint PRIMARY KEY, last_ts "
                     "timestamptz, last_kind text, amount_cents bigint, country text, "
                     "last_event_id text)")
        conn.execute(sql.SQL("GRANT CREATE ON SCHEMA public TO {}; GRANT INSERT ON user_latest "
                             "TO {}").format(sql.Identifier(login_role),
                                             sql.Identifier(login_role)))
    monkeypatch.setenv("VELTRIX_POSTGRES_DSN", make_conninfo(pg_dsn, user=login_role))
    f = _one(_check("pipeline=user_totals"), "error", "postgres.dsn")
    assert "lacks SELECT and UPDATE on public.user_latest" in f.message
    assert f"GRANT SELECT, UPDATE ON public.user_latest TO {login_role}" in f.message


def test_an_incompatible_existing_table_names_the_column(pg_dsn: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE events (event_id text NOT NULL, ts timestamptz NOT NULL, "
                     "user_id bigint NOT NULL, kind text NOT NULL, amount text NOT NULL, "
                     "country text NOT NULL, payload jsonb)")
    monkeypatch.setenv("VELTRIX_POSTGRES_DSN", pg_dsn)
    findings = _check()
    columns = [f for f in findings if f.key == "pipeline.columns"]
    assert [f.level for f in columns] == ["error"]
    assert "'amount'" in columns[0].message and "double precision" in columns[0].message
    assert "pipeline.columns" in columns[0].message


def test_upsert_without_a_unique_index_names_the_index_to_create(
        pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE user_latest (user_id bigint, last_ts timestamptz, "
                     "last_kind text, amount_cents bigint, country text, last_event_id text)")
    monkeypatch.setenv("VELTRIX_POSTGRES_DSN", pg_dsn)
    findings = _check("pipeline=user_totals")
    f = _one(findings, "error", "pipeline.key")
    assert "CREATE UNIQUE INDEX ON public.user_latest (user_id)" in f.message
    assert "pipeline.columns" not in _keys(findings, "error")
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE UNIQUE INDEX ON user_latest (user_id)")
    findings = _check("pipeline=user_totals")
    assert "pipeline.key" not in _keys(findings, "error")
    assert "exists and fits the pipeline" in _one(findings, "ok", "postgres").message


# -- Ray and memory -------------------------------------------------------------------------


def test_more_cpus_than_the_machine_has_names_workers(new_topic: Callable[[int], str]) -> None:
    cores = os.cpu_count() or 1
    topic = new_topic(64)
    f = _one(_check(f"kafka.topic={topic}", "topology.workers=64",
                    f"topology.num_cpus={cores}"), "error", "topology.workers")
    assert f"need {64 * cores} CPUs" in f.message and f"has {cores}" in f.message
    assert "lower topology.workers to 1" in f.message


def test_more_memory_than_the_machine_has_names_memory_mb() -> None:
    f = _one(_check("topology.workers=1", "topology.memory_mb=100000000"),
             "error", "topology.memory_mb")
    assert "need 100000000 MiB" in f.message and "lower topology.memory_mb" in f.message


@pytest.mark.parametrize("autoscales", [False, True])
def test_a_cluster_without_cpus_now_is_an_error_unless_it_autoscales(
        autoscales: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    from veltrix_ray.check import checks

    # a cloud cluster whose head runs no tasks (num-cpus 0), before its first worker node
    monkeypatch.setattr(checks, "_capacity", lambda topo: (
        0.0, 0.0, "the Ray cluster at 10.0.0.1:6379", autoscales))
    settings = to_settings(load_config(["topology.address=10.0.0.1:6379", "topology.workers=2",
                                        "topology.num_cpus=1", "topology.place_timeout_s=300"]))
    findings, _ = checks._ray(settings, 8)
    assert {f.key: f.level for f in findings} == {
        "topology.workers": "warning" if autoscales else "error",
        "topology.memory_mb": "warning" if autoscales else "error"}
    cpus = findings[0].message
    assert "need 2 CPUs, but the Ray cluster at 10.0.0.1:6379 has 0: add nodes" in cpus
    assert "num_cpus to 0" not in cpus and "lower topology.workers" not in cpus
    assert ("its autoscaler must add nodes within topology.place_timeout_s=300s" in cpus
            ) == autoscales


def test_unreachable_ray_address_names_the_address() -> None:
    f = _one(_check("topology.address=ray://127.0.0.1:1"), "error", "topology.address")
    assert "ray://127.0.0.1:1" in f.message and "fix topology.address" in f.message


def test_a_budget_below_the_overhead_names_memory_mb() -> None:
    findings = _check("topology.memory_mb=257")
    f = _one(findings, "error", "topology.memory_mb")
    assert "Raise topology.memory_mb to at least" in f.message
    assert "memory" not in _keys(findings, "ok")


def test_a_record_larger_than_a_batch_names_both_fixes() -> None:
    f = _one(_check("pipeline.max_record_bytes=100000000"), "error", "pipeline.max_record_bytes")
    assert "lower pipeline.max_record_bytes to at most" in f.message
    assert "raise topology.memory_mb to at least" in f.message


def test_max_records_far_above_the_byte_cap_is_a_warning() -> None:
    findings = _check("batch.max_records=10000000")
    f = _one(findings, "warning", "batch.max_records")
    assert "far above the batch byte cap" in f.message and "lower batch.max_records" in f.message
    assert "memory" in _keys(findings, "ok")


# -- dead letters ---------------------------------------------------------------------------


def test_dead_letter_limits_that_never_fire_warn() -> None:
    f = _one(_check("pipeline.dead_letters.max_consecutive=5000",
                    "pipeline.dead_letters.window=1000"),
             "warning", "pipeline.dead_letters.max_consecutive")
    assert "never fires" in f.message and "at most 1000" in f.message
    f = _one(_check("pipeline.dead_letters.max_ratio=1"),
             "warning", "pipeline.dead_letters.max_ratio")
    assert "never fires" in f.message and "lower it" in f.message


# -- secrets --------------------------------------------------------------------------------


def test_postgres_password_is_masked_everywhere(monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("VELTRIX_POSTGRES_DSN", f"postgresql://u:{SECRET}@127.0.0.1:1/db")
    for argv, code in ((["config", "show"], 0), (["check"], 1), (["run"], 1)):
        assert cli.main(argv) == code, argv
        out = capsys.readouterr()
        printed = out.out + out.err
        assert SECRET not in printed, argv
        assert "postgresql://u:****@127.0.0.1:1/db" in printed, argv


def test_kafka_password_is_masked_everywhere(monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("VELTRIX_KAFKA_USERNAME", "alice")
    monkeypatch.setenv("VELTRIX_KAFKA_PASSWORD", SECRET)
    overrides = ["kafka.bootstrap=127.0.0.1:1", "kafka.security_protocol=SASL_PLAINTEXT",
                 "kafka.sasl_mechanism=PLAIN"]
    assert cli.main(["config", "show", *overrides]) == 0
    shown = capsys.readouterr().out
    assert SECRET not in shown and "sasl_password: '****'" in shown
    for argv in (["check", *overrides], ["run", *overrides]):
        assert cli.main(argv) == 1, argv
        out = capsys.readouterr()
        printed = out.out + out.err
        assert SECRET not in printed and "kafka.bootstrap" in printed, argv


# last: the session's Ray stays up, and the checks then measure it, not the machine
def test_a_connected_ray_is_measured_instead_of_the_machine(
        ray_local: None, new_topic: Callable[[int], str]) -> None:
    import ray

    cpus = ray.cluster_resources()["CPU"]  # type: ignore[no-untyped-call]
    workers = int(cpus) + 1
    f = _one(_check(f"kafka.topic={new_topic(workers)}", f"topology.workers={workers}",
                    "topology.num_cpus=1"), "error", "topology.workers")
    assert f"the connected Ray has {cpus:g}" in f.message
    # a Ray without an autoscaling config cannot add nodes: short of CPUs is an error
    ok = _one(_check("topology.workers=1", "topology.num_cpus=1"), "ok", "ray").message
    assert ok.endswith("on the connected Ray"), ok
