"""Kafka production against librdkafka's built-in mock cluster."""

from __future__ import annotations

import time

import pytest

from tasks.alerts import PackageAlertsConfig, PackageAlertsTask
from tasks.alerts.io import read_alert_file
from tasks.alerts.kafka import (
    KafkaConfigError,
    confluent_header,
    decode_confluent,
    kafka_settings_from_env,
)
from tests.tasks.alerts.conftest import make_scene

confluent_kafka = pytest.importorskip("confluent_kafka")

TOPIC = "alerts-test"


def consume(bootstrap: str, n: int, timeout: float = 30.0) -> list:
    consumer = confluent_kafka.Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "test", "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([TOPIC])
    messages = []
    deadline = time.monotonic() + timeout
    try:
        while len(messages) < n and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            messages.append(msg)
    finally:
        consumer.close()
    return messages


def run_with_kafka(tmp_path, monkeypatch, extra=""):
    monkeypatch.setenv("AP_KAFKA_CONFIG", "test.mock.num.brokers=1" + extra)
    monkeypatch.setenv("AP_KAFKA_TOPIC", TOPIC)
    monkeypatch.delenv("AP_KAFKA_SERVER", raising=False)
    scene = make_scene()
    task = PackageAlertsTask(
        PackageAlertsConfig(
            alertWriteLocation=str(tmp_path), doProduceAlerts=True, kafkaBatchSize=2
        )
    )
    result = task.run(
        scene.sources,
        scene.objects,
        scene.src_history,
        scene.forced_history,
        scene.diffim,
        scene.calexp,
        scene.template,
        ssSrc=scene.ss_sources,
    )
    return task, result


def test_alerts_produced_and_consumed_back(tmp_path, monkeypatch):
    task, result = run_with_kafka(tmp_path, monkeypatch)
    assert result.nDelivered == result.nAlerts == 5
    assert result.failedAlertFile is None
    messages = consume(task._producer.bootstrap_servers, result.nAlerts)
    assert len(messages) == result.nAlerts
    in_file = {a["diaSourceId"]: a for a in read_alert_file(result.alertFile)}
    for msg in messages:
        schema_id, body = decode_confluent(msg.value())
        assert msg.value()[:1] == b"\x00"
        assert schema_id == task.alertSchema.schema_id == 1101
        alert = task.alertSchema.deserialize(body)
        assert int(msg.key()) == alert["diaSourceId"]
        assert alert == in_file[alert["diaSourceId"]]


def test_failed_alerts_are_written_to_disk(tmp_path, monkeypatch):
    # alerts with cutouts exceed this message size limit: every produce fails
    task, result = run_with_kafka(tmp_path, monkeypatch, ";message.max.bytes=1000")
    assert result.nDelivered == 0
    assert result.failedAlertFile is not None
    failed = read_alert_file(result.failedAlertFile)
    assert sorted(a["diaSourceId"] for a in failed) == sorted(
        a["diaSourceId"] for a in read_alert_file(result.alertFile)
    )


def test_header_and_settings():
    assert confluent_header(1101) == b"\x00\x00\x00\x04\x4d"
    assert decode_confluent(confluent_header(7) + b"abc") == (7, b"abc")
    settings, topic = kafka_settings_from_env(
        {
            "AP_KAFKA_SERVER": "broker:9092",
            "AP_KAFKA_TOPIC": "alerts",
            "AP_KAFKA_PRODUCER_USERNAME": "me",
            "AP_KAFKA_PRODUCER_PASSWORD": "secret",
            "AP_KAFKA_CONFIG": "linger.ms=5; compression.type=lz4",
        }
    )
    assert topic == "alerts"
    assert settings["bootstrap.servers"] == "broker:9092"
    assert settings["sasl.username"] == "me" and settings["sasl.mechanisms"] == "SCRAM-SHA-512"
    assert settings["compression.type"] == "lz4"
    with pytest.raises(KafkaConfigError, match="AP_KAFKA_SERVER"):
        kafka_settings_from_env({"AP_KAFKA_TOPIC": "alerts"})
    with pytest.raises(KafkaConfigError, match="AP_KAFKA_TOPIC"):
        kafka_settings_from_env({"AP_KAFKA_SERVER": "b:1"})
