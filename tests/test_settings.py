"""Settings come from the environment at start-up, over the local stack's file."""

import functools
import json

import pytest

from mmq.tasks import ConfigurationError, Settings
from mmq.tasks.settings import STACK_FILE


def test_defaults_name_real_hub_checkpoints(tmp_path):
    settings = Settings.from_env({"MMQ_DATA_DIR": str(tmp_path)})
    assert settings.broker_url == "redis://127.0.0.1:6379/0"
    assert settings.result_backend == settings.broker_url
    assert settings.model_for("caption") == "Salesforce/blip-image-captioning-base"
    assert settings.model_for("diffusion") == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert settings.record_ttl_s == 7 * 24 * 3600


def test_environment_variables_are_honoured(tmp_path):
    settings = Settings.from_env({
        "MMQ_DATA_DIR": str(tmp_path), "MMQ_BROKER_URL": "redis://r:1/2",
        "AWS_ENDPOINT_URL": "http://s3:9000", "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "secret", "MMQ_CAPTION_MODEL": "tiny",
        "MMQ_DIFFUSION_TIME_LIMIT_S": "900", "MMQ_DIFFUSION_SOFT_TIME_LIMIT_S": "800",
    })
    assert settings.result_backend == "redis://r:1/2"
    assert settings.s3_endpoint_url == "http://s3:9000"
    assert settings.s3_region == "eu-west-1"
    assert (settings.aws_access_key_id, settings.aws_secret_access_key) == ("id", "secret")
    assert settings.model_for("caption") == "tiny"
    assert settings.limits_for("diffusion").hard_s == 900


def test_stack_file_supplies_defaults_and_environment_wins(tmp_path):
    (tmp_path / STACK_FILE).write_text(json.dumps({"env": {
        "MMQ_BROKER_URL": "redis://127.0.0.1:7000/0", "MMQ_S3_ENDPOINT_URL": "http://127.0.0.1:7001"}}))
    from_file = Settings.from_env({"MMQ_DATA_DIR": str(tmp_path)})
    assert from_file.broker_url == "redis://127.0.0.1:7000/0"
    assert from_file.s3_endpoint_url == "http://127.0.0.1:7001"
    overridden = Settings.from_env({"MMQ_DATA_DIR": str(tmp_path), "MMQ_BROKER_URL": "redis://elsewhere:1/0"})
    assert overridden.broker_url == "redis://elsewhere:1/0"


@pytest.mark.parametrize("env, message", [
    ({"MMQ_RECORD_TTL_S": "soon"}, "MMQ_RECORD_TTL_S must be an integer"),
    ({"MMQ_RECORD_TTL_S": "-5"}, "MMQ_RECORD_TTL_S must be positive"),
    ({"MMQ_VISIBILITY_TIMEOUT_S": "60"}, "must be longer than the longest hard time limit"),
    ({"MMQ_CAPTION_SOFT_TIME_LIMIT_S": "500", "MMQ_CAPTION_TIME_LIMIT_S": "400"}, "must be below"),
    ({"MMQ_S3_BUCKET": "ab"}, "3-63 characters"),
])
def test_bad_settings_are_refused_with_the_variable_named(tmp_path, env, message):
    with pytest.raises(ConfigurationError, match=message):
        Settings.from_env({"MMQ_DATA_DIR": str(tmp_path), **env})


def caption_serving(tmp_path, **env):
    return Settings.from_env({"MMQ_DATA_DIR": str(tmp_path), **env}).serving_for("caption")


def test_prepare_processes_are_a_whole_number_per_specialisation(tmp_path):
    serving = functools.partial(caption_serving, tmp_path)
    assert serving().prepare_processes == 2
    assert serving(MMQ_CAPTION_PREPARE_PROCESSES="0").prepare_processes == 0  # off: the worker's threads
    assert serving(MMQ_CAPTION_PREPARE_PROCESSES="4").prepare_processes == 4
    for bad in ("-1", "two", "1.5", "²"):
        with pytest.raises(ConfigurationError, match=f"MMQ_CAPTION_PREPARE_PROCESSES must be a whole number.*{bad!r}"):
            serving(MMQ_CAPTION_PREPARE_PROCESSES=bad)


def test_the_work_that_feeds_the_model_runs_ten_steps_of_niceness_lower_unless_told(tmp_path):
    serving = functools.partial(caption_serving, tmp_path)
    assert serving().prepare_nice == 10
    assert serving(MMQ_CAPTION_PREPARE_NICE="0").prepare_nice == 0  # off: the model's priority
    assert serving(MMQ_CAPTION_PREPARE_NICE="19").prepare_nice == 19
    with pytest.raises(ConfigurationError, match="MMQ_CAPTION_PREPARE_NICE must be 0 to 19.*got 20"):
        serving(MMQ_CAPTION_PREPARE_NICE="20")
    for bad in ("-5", "high"):
        with pytest.raises(ConfigurationError, match=f"_PREPARE_NICE must be a whole number.*{bad!r}"):
            serving(MMQ_CAPTION_PREPARE_NICE=bad)
