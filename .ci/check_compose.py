#!/usr/bin/env python3
"""Checks docker-compose.yml and the Dockerfile where no Docker engine runs.

- The YAML is well-formed and has the services the deployment needs (postgres 18 and redis 7
  with health checks, a one-off migrate, web with a /readyz health check, worker), started in
  the right order (depends_on conditions).
- Every command of a service built from this project names something that exists: a
  `manage.py` subcommand Django knows, gunicorn's config file and the WSGI app it names.
- Every environment variable such a service sets is one the project reads (the names in
  walletsite/config.py), every secret is required (`${NAME:?...}`), and the environment,
  with placeholders for what compose would interpolate, is a valid production configuration
  by walletsite.config.load itself.
- The Dockerfile starts from python:3.11-slim, installs requirements.txt, runs as a non-root
  user, and sets only variables the project reads.

Run from anywhere: `python .ci/check_compose.py` exits 1 and lists the problems.
walletsite/tests/test_compose.py runs the same checks under `make test`.
"""

from __future__ import annotations

import ast
import atexit
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
PROJECT_SERVICES = ("migrate", "web", "worker")
# Read by libraries, not by walletsite.config: prometheus_client (multiprocess metrics) and
# Python and pip themselves (in the Dockerfile).
LIBRARY_VARIABLES = {"PROMETHEUS_MULTIPROC_DIR"}
DOCKERFILE_VARIABLES = {
    "PYTHONDONTWRITEBYTECODE",
    "PYTHONUNBUFFERED",
    "PIP_NO_CACHE_DIR",
    "PIP_DISABLE_PIP_VERSION_CHECK",
}
# What compose interpolation would give, for checking the environment with config.load.
PLACEHOLDERS = {"PUBLIC_URL": "https://wallet.example.com", "POSTGRES_PASSWORD": "placeholder-password"}
_INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Z0-9_]+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def project_variables(root: Path = ROOT) -> set[str]:
    """Every environment variable walletsite/config.py reads, from its source."""
    source = (root / "walletsite" / "config.py").read_text()
    names = set(re.findall(r'_(?:text|integer|boolean|choice)\(\s*env,\s*"([A-Z][A-Z0-9_]*)"', source))
    names |= set(re.findall(r'env\.get\(\s*"([A-Z][A-Z0-9_]*)"', source))
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "SECRET_NAMES" for t in node.targets):
            names |= {elt.value for elt in node.value.elts}
    return names


def secret_names(root: Path = ROOT) -> tuple[str, ...]:
    tree = ast.parse((root / "walletsite" / "config.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "SECRET_NAMES" for t in node.targets):
            return tuple(elt.value for elt in node.value.elts)
    return ()


def management_commands() -> set[str]:
    """The subcommands `manage.py` knows (Django's and the project's apps')."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "walletsite.settings")
    # Loading settings must not write development secrets into the checkout's .data/.
    if "DATA_DIR" not in os.environ:
        data_dir = tempfile.mkdtemp(prefix="wallet-check-compose-")
        atexit.register(shutil.rmtree, data_dir, ignore_errors=True)
        os.environ["DATA_DIR"] = data_dir
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import django
    from django.apps import apps
    from django.core.management import get_commands

    if not apps.ready:
        django.setup()
    return set(get_commands())


def _interpolate(value: str) -> str:
    def substitute(match: re.Match) -> str:
        name, op, arg = match.group("name"), match.group("op"), match.group("arg")
        if name in PLACEHOLDERS:
            return PLACEHOLDERS[name]
        if op and op.endswith("-"):
            return arg
        # A required secret: a placeholder as long as a real one.
        return f"placeholder-{name.lower()}-".ljust(64, "x")

    return _INTERPOLATION.sub(substitute, value)


def _command_problems(name: str, command, root: Path, commands: set[str]) -> list[str]:
    if not isinstance(command, list) or not command:
        return [f"{name}: command must be a non-empty list (exec form), got {command!r}"]
    where = f"{name}: command {' '.join(map(str, command))!r}"
    if command[:2] == ["python", "manage.py"]:
        if not (root / "manage.py").exists():
            return [f"{where}: manage.py does not exist"]
        if len(command) < 3 or command[2] not in commands:
            return [f"{where}: manage.py has no subcommand {command[2:3]}"]
        return []
    if command[0] == "gunicorn":
        if "-c" not in command or command.index("-c") + 1 >= len(command):
            return [f"{where}: gunicorn needs -c <config file>"]
        conf = root / command[command.index("-c") + 1]
        if not conf.is_file():
            return [f"{where}: {conf.relative_to(root)} does not exist"]
        return _wsgi_problems(where, conf, root)
    return [f"{where}: not a command this check knows (python manage.py ... or gunicorn -c ...)"]


def _wsgi_problems(where: str, conf: Path, root: Path) -> list[str]:
    tree = ast.parse(conf.read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "wsgi_app" for t in node.targets):
            module, _, attribute = node.value.value.partition(":")
            path = root / (module.replace(".", "/") + ".py")
            if not path.is_file():
                return [f"{where}: wsgi_app module {module} does not exist"]
            if attribute and not re.search(rf"^{attribute}\s*=", path.read_text(), re.M):
                return [f"{where}: {module} defines no {attribute}"]
            return []
    return [f"{where}: {conf.name} sets no wsgi_app"]


def _healthcheck_problems(name: str, service: dict) -> list[str]:
    test = (service.get("healthcheck") or {}).get("test")
    if not test:
        return [f"{name}: no healthcheck"]
    return []


def compose_problems(root: Path = ROOT, compose: Path | None = None, commands: set[str] | None = None) -> list[str]:
    compose = compose or root / "docker-compose.yml"
    try:
        document = yaml.safe_load(compose.read_text())
    except (OSError, yaml.YAMLError) as exc:
        return [f"{compose.name}: not readable YAML: {exc}"]
    services = (document or {}).get("services") or {}
    problems: list[str] = []
    for required in ("postgres", "redis", *PROJECT_SERVICES):
        if required not in services:
            problems.append(f"no service {required!r}")
    if problems:
        return problems
    commands = management_commands() if commands is None else commands
    allowed = project_variables(root) | LIBRARY_VARIABLES
    secrets = secret_names(root)

    if not str(services["postgres"].get("image", "")).startswith("postgres:18"):
        problems.append("postgres: image must be postgres:18")
    if not str(services["redis"].get("image", "")).startswith("redis:7"):
        problems.append("redis: image must be redis:7")
    for name in ("postgres", "redis", "web"):
        problems += _healthcheck_problems(name, services[name])
    web_test = " ".join(map(str, (services["web"].get("healthcheck") or {}).get("test") or []))
    if "/readyz" not in web_test:
        problems.append("web: the healthcheck must ask /readyz")

    expected_order = {
        "migrate": {"postgres": "service_healthy"},
        "web": {"migrate": "service_completed_successfully"},
        "worker": {"migrate": "service_completed_successfully"},
    }
    for name, needs in expected_order.items():
        depends = services[name].get("depends_on") or {}
        for other, condition in needs.items():
            got = depends.get(other, {}).get("condition") if isinstance(depends, dict) else None
            if got != condition:
                problems.append(f"{name}: must depend on {other} with condition {condition} (got {got})")

    for name in PROJECT_SERVICES:
        service = services[name]
        if "build" not in service:
            problems.append(f"{name}: must be built from this project (build: .)")
        problems += _command_problems(name, service.get("command"), root, commands)
        environment = service.get("environment") or {}
        if isinstance(environment, list):
            environment = dict(item.split("=", 1) for item in environment)
        for variable in sorted(set(environment) - allowed):
            problems.append(f"{name}: sets {variable}, which the project does not read")
        for secret in secrets:
            if not re.fullmatch(rf"\$\{{{secret}:\?[^}}]*\}}", str(environment.get(secret, ""))):
                problems.append(f"{name}: {secret} must be required from the environment as ${{{secret}:?...}}")
        for required in ("DATABASE_URL", "REDIS_URL", "PUBLIC_URL"):
            if required not in environment:
                problems.append(f"{name}: does not set {required}")
        if environment.get("DJANGO_ENV") != "production":
            problems.append(f"{name}: DJANGO_ENV must be production")
        problems += _config_problems(name, environment, root)
    return problems


def _config_problems(name: str, environment: dict, root: Path) -> list[str]:
    """The service's environment, interpolated with placeholders, through config.load."""
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from walletsite import config

    rendered = {key: _interpolate(str(value)) for key, value in environment.items()}
    with tempfile.TemporaryDirectory(prefix="wallet-check-compose-") as data_dir:
        rendered.setdefault("DATA_DIR", data_dir)
        try:
            loaded = config.load(rendered)
        except config.ConfigError as exc:
            return [f"{name}: its environment is not a valid configuration: {exc}"]
    if loaded.database.embedded:
        return [f"{name}: would use the embedded PostgreSQL instead of the postgres service"]
    if loaded.database.host != "postgres":
        return [f"{name}: DATABASE_URL must point at the postgres service, not {loaded.database.host!r}"]
    return []


def dockerfile_problems(root: Path = ROOT) -> list[str]:
    path = root / "Dockerfile"
    if not path.is_file():
        return ["Dockerfile does not exist"]
    # Continuation lines joined, so that one instruction is one line.
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    problems = []
    if not lines or lines[0] != "FROM python:3.11-slim":
        problems.append("Dockerfile: must start FROM python:3.11-slim")
    if not any(re.fullmatch(r"RUN pip install (--[a-z-]+ )*-r requirements\.txt.*", line) for line in lines):
        problems.append("Dockerfile: must pip install -r requirements.txt")
    users = [line.split(None, 1)[1] for line in lines if line.startswith("USER ")]
    if not users or users[-1] in ("root", "0"):
        problems.append("Dockerfile: must switch to a non-root USER")
    allowed = project_variables(root) | LIBRARY_VARIABLES | DOCKERFILE_VARIABLES
    for line in lines:
        if line.startswith("ENV "):
            for variable in re.findall(r"([A-Z][A-Z0-9_]*)=", line):
                if variable not in allowed:
                    problems.append(f"Dockerfile: sets {variable}, which the project does not read")
        if line.startswith("COPY "):
            sources = line.split()[1:-1]
            for source in sources:
                if source != "." and not (root / source).exists():
                    problems.append(f"Dockerfile: COPY {source}: no such file")
    cmd = [line for line in lines if line.startswith("CMD ")]
    if cmd:
        try:
            command = ast.literal_eval(cmd[-1][4:])
        except (SyntaxError, ValueError):
            command = None
        problems += _command_problems("Dockerfile CMD", command, root, set())
    else:
        problems.append("Dockerfile: no CMD")
    if not (root / ".dockerignore").is_file() or ".venv" not in (root / ".dockerignore").read_text():
        problems.append(".dockerignore must keep .venv (and .data, .git) out of the image")
    return problems


def main() -> int:
    problems = compose_problems() + dockerfile_problems()
    for problem in problems:
        print(f"check_compose: {problem}", file=sys.stderr)
    if problems:
        return 1
    print("check_compose: docker-compose.yml and Dockerfile are consistent with the project")
    return 0


if __name__ == "__main__":
    sys.exit(main())
