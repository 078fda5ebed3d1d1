"""docker-compose.yml and the Dockerfile, checked without a Docker engine by
.ci/check_compose.py: the real files pass, and each kind of mistake it exists for is caught."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest
import yaml
from django.conf import settings

ROOT = Path(settings.BASE_DIR)


def _load_checker():
    spec = importlib.util.spec_from_file_location("check_compose", ROOT / ".ci" / "check_compose.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check = _load_checker()


@pytest.fixture(scope="module")
def commands() -> set[str]:
    return check.management_commands()


@pytest.fixture
def compose_document() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _problems_of(document: dict, tmp_path: Path, commands: set[str]) -> list[str]:
    path = tmp_path / "docker-compose.yml"
    path.write_text(yaml.safe_dump(document))
    return check.compose_problems(ROOT, path, commands)


def test_the_real_compose_file_and_dockerfile_pass(commands):
    # when
    problems = check.compose_problems(ROOT, commands=commands) + check.dockerfile_problems(ROOT)
    # then
    assert problems == []


def test_the_checker_knows_the_project_commands_and_variables(commands):
    # then: what the compose file relies on is really there
    assert {"migrate", "run_worker", "check"} <= commands
    variables = check.project_variables(ROOT)
    assert {"DATABASE_URL", "REDIS_URL", "DJANGO_ENV", "PORT", "DJANGO_SECRET_KEY", "PIN_PEPPER"} <= variables


def test_an_unknown_management_command_is_caught(compose_document, tmp_path, commands):
    # given
    compose_document["services"]["worker"]["command"] = ["python", "manage.py", "run_wroker"]
    # when
    problems = _problems_of(compose_document, tmp_path, commands)
    # then
    assert any("worker" in p and "run_wroker" in p for p in problems), problems


def test_a_missing_gunicorn_config_is_caught(compose_document, tmp_path, commands):
    # given
    compose_document["services"]["web"]["command"] = ["gunicorn", "-c", "walletsite/gunicorn.conf.py"]
    # when
    problems = _problems_of(compose_document, tmp_path, commands)
    # then
    assert any("web" in p and "does not exist" in p for p in problems), problems


def test_a_variable_the_project_does_not_read_is_caught(compose_document, tmp_path, commands):
    # given: a typo, and a name from another framework
    environment = compose_document["services"]["web"]["environment"]
    environment["DATABASE_URI"] = environment["DATABASE_URL"]
    environment["SECRET_KEY"] = "x"
    # when
    problems = _problems_of(compose_document, tmp_path, commands)
    # then
    assert "web: sets DATABASE_URI, which the project does not read" in problems
    assert "web: sets SECRET_KEY, which the project does not read" in problems


def test_a_secret_with_a_default_value_is_caught(compose_document, tmp_path, commands):
    # given
    compose_document["services"]["worker"]["environment"]["PIN_PEPPER"] = "${PIN_PEPPER:-not-so-secret}"
    # when
    problems = _problems_of(compose_document, tmp_path, commands)
    # then
    assert any(p.startswith("worker: PIN_PEPPER must be required") for p in problems), problems


def test_an_invalid_configuration_is_caught(compose_document, tmp_path, commands):
    # given
    compose_document["services"]["web"]["environment"]["WEB_THREADS"] = "many"
    # when
    problems = _problems_of(compose_document, tmp_path, commands)
    # then
    assert any("web: its environment is not a valid configuration: WEB_THREADS" in p for p in problems), problems


def test_start_order_and_health_checks_are_required(compose_document, tmp_path, commands):
    # given
    services = compose_document["services"]
    services["web"]["depends_on"]["migrate"]["condition"] = "service_started"
    del services["postgres"]["healthcheck"]
    # when
    problems = _problems_of(compose_document, tmp_path, commands)
    # then
    assert any(p.startswith("web: must depend on migrate") for p in problems), problems
    assert "postgres: no healthcheck" in problems


def test_broken_yaml_is_reported(tmp_path, commands):
    # given
    path = tmp_path / "docker-compose.yml"
    path.write_text("services:\n  web: [unclosed\n")
    # when
    problems = check.compose_problems(ROOT, path, commands)
    # then
    assert len(problems) == 1 and "not readable YAML" in problems[0]


def test_a_dockerfile_running_as_root_is_caught(tmp_path):
    # given: a copy of the project files the check reads, with the USER line removed
    for name in ("walletsite/config.py", "walletsite/gunicorn_conf.py", "walletsite/wsgi.py", "requirements.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copy(ROOT / ".dockerignore", tmp_path / ".dockerignore")
    dockerfile = (ROOT / "Dockerfile").read_text()
    (tmp_path / "Dockerfile").write_text(dockerfile.replace("USER wallet", ""))
    # when
    problems = check.dockerfile_problems(tmp_path)
    # then
    assert problems == ["Dockerfile: must switch to a non-root USER"]
