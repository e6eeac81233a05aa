"""Producing alerts to Kafka (optional; needs ``confluent-kafka``).

Each message is one alert in the Confluent wire format: a magic byte 0,
the 4-byte big-endian schema id, then the schemaless Avro body.  Messages
are queued in batches and polled for delivery reports between batches;
the producer is flushed once at the end of a visit, not per alert.  Alerts
whose delivery fails are returned so the caller can write them to disk.

Configuration comes from the environment (the variable names of Rubin's
alert production):

``AP_KAFKA_SERVER``
    Bootstrap servers (``host:port[,host:port]``).
``AP_KAFKA_TOPIC``
    Topic to produce to.
``AP_KAFKA_PRODUCER_USERNAME`` / ``AP_KAFKA_PRODUCER_PASSWORD``
    Optional SASL credentials (SCRAM-SHA-512 over SASL_SSL unless
    ``AP_KAFKA_SECURITY_PROTOCOL`` / ``AP_KAFKA_SASL_MECHANISM`` say otherwise).
``AP_KAFKA_CONFIG``
    Optional extra librdkafka settings, ``key=value`` pairs separated by
    ``;`` (e.g. ``linger.ms=20;compression.type=lz4``).
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tasks.core.base import TaskError

__all__ = [
    "AlertProducer",
    "KafkaConfigError",
    "ProduceResult",
    "confluent_header",
    "decode_confluent",
    "kafka_settings_from_env",
]

_log = logging.getLogger(__name__)

_MAGIC = 0


class KafkaConfigError(TaskError):
    """Kafka production is requested but not configured or not available."""


def confluent_header(schema_id: int) -> bytes:
    """Return the 5-byte Confluent wire-format header for a schema id."""
    return struct.pack(">bI", _MAGIC, int(schema_id))


def decode_confluent(message: bytes) -> tuple[int, bytes]:
    """Split a Confluent wire-format message into ``(schema_id, body)``.

    Raises
    ------
    TaskError
        If the message is shorter than the header or the magic byte is not 0.
    """
    if len(message) < 5 or message[0] != _MAGIC:
        raise TaskError("not a Confluent wire-format message (magic byte 0 + schema id)")
    (schema_id,) = struct.unpack(">I", message[1:5])
    return schema_id, message[5:]


def kafka_settings_from_env(env: Mapping[str, str] | None = None) -> tuple[dict[str, Any], str]:
    """Read the producer settings and topic from the environment.

    Returns
    -------
    settings : `dict`
        librdkafka configuration.
    topic : `str`
        Topic to produce to.

    Raises
    ------
    KafkaConfigError
        If the server or the topic is not set.
    """
    env = os.environ if env is None else env
    settings: dict[str, Any] = {}
    for item in env.get("AP_KAFKA_CONFIG", "").split(";"):
        if item.strip():
            key, sep, value = item.partition("=")
            if not sep:
                raise KafkaConfigError(f"AP_KAFKA_CONFIG item {item!r} is not key=value")
            settings[key.strip()] = value.strip()
    server = env.get("AP_KAFKA_SERVER")
    if server:
        settings["bootstrap.servers"] = server
    if "bootstrap.servers" not in settings and "test.mock.num.brokers" not in settings:
        raise KafkaConfigError("set AP_KAFKA_SERVER to produce alerts to Kafka")
    topic = env.get("AP_KAFKA_TOPIC")
    if not topic:
        raise KafkaConfigError("set AP_KAFKA_TOPIC to produce alerts to Kafka")
    user = env.get("AP_KAFKA_PRODUCER_USERNAME")
    if user:
        settings.setdefault("security.protocol", env.get("AP_KAFKA_SECURITY_PROTOCOL", "SASL_SSL"))
        settings.setdefault("sasl.mechanisms", env.get("AP_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512"))
        settings["sasl.username"] = user
        settings["sasl.password"] = env.get("AP_KAFKA_PRODUCER_PASSWORD", "")
    return settings, topic


@dataclass
class ProduceResult:
    """Outcome of producing one batch of alerts.

    Attributes
    ----------
    delivered : `int`
        Messages acknowledged by the brokers.
    failed : `list` [`int`]
        Indices (into the payload list) of messages that were not delivered.
    errors : `list` [`str`]
        One message per failure.
    """

    delivered: int = 0
    failed: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class AlertProducer:
    """Produce serialised alerts to a Kafka topic.

    Parameters
    ----------
    settings : `dict`
        librdkafka configuration (``bootstrap.servers`` etc.).
    topic : `str`
        Topic.
    schema_id : `int`
        Schema id written in each message header.
    batch_size : `int`, optional
        Messages queued between two polls for delivery reports.
    flush_timeout : `float`, optional
        Seconds to wait for outstanding deliveries at the end of a batch.
    """

    def __init__(
        self,
        settings: Mapping[str, Any],
        topic: str,
        schema_id: int,
        batch_size: int = 1000,
        flush_timeout: float = 30.0,
    ) -> None:
        try:
            from confluent_kafka import Producer
        except ImportError as exc:
            raise KafkaConfigError(
                "producing alerts needs confluent-kafka: pip install 'apdb-pipeline[kafka]'"
            ) from exc
        conf = {"linger.ms": 20, "message.max.bytes": 10_000_000}
        conf.update(settings)
        try:
            self._producer = Producer(conf)
        except Exception as exc:  # librdkafka raises KafkaException for bad settings
            raise KafkaConfigError(f"cannot create a Kafka producer: {exc}") from exc
        self.topic = topic
        self.header = confluent_header(schema_id)
        self.batch_size = int(batch_size)
        self.flush_timeout = float(flush_timeout)

    @classmethod
    def from_environment(
        cls, schema_id: int, env: Mapping[str, str] | None = None, **kwargs: Any
    ) -> AlertProducer:
        """Build a producer from the ``AP_KAFKA_*`` environment variables."""
        settings, topic = kafka_settings_from_env(env)
        return cls(settings, topic, schema_id, **kwargs)

    @property
    def bootstrap_servers(self) -> str:
        """Comma-separated broker addresses of the cluster the producer talks to."""
        metadata = self._producer.list_topics(timeout=10)
        return ",".join(f"{b.host}:{b.port}" for b in metadata.brokers.values())

    def produce(self, bodies: Sequence[bytes], keys: Sequence[int] | None = None) -> ProduceResult:
        """Produce one message per Avro body and wait for their delivery.

        Parameters
        ----------
        bodies : sequence of `bytes`
            Schemaless Avro alerts.
        keys : sequence of `int`, optional
            Message keys (the alerts' ``diaSourceId``).

        Returns
        -------
        result : `ProduceResult`
        """
        status: list[str | None] = [None] * len(bodies)  # None: no report yet; "": delivered

        def report(index: int):
            def callback(err: Any, _msg: Any) -> None:
                status[index] = "" if err is None else str(err)

            return callback

        for i, body in enumerate(bodies):
            key = str(keys[i]).encode() if keys is not None else None
            while True:
                try:
                    self._producer.produce(
                        self.topic, value=self.header + body, key=key, on_delivery=report(i)
                    )
                    break
                except BufferError:  # local queue full: serve delivery reports, then retry
                    self._producer.poll(0.5)
                except Exception as exc:  # KafkaException: message too large, unknown topic...
                    status[i] = str(exc)
                    break
            if (i + 1) % self.batch_size == 0:
                self._producer.poll(0)
        remaining = self._producer.flush(self.flush_timeout)
        if remaining:
            _log.warning(
                "%d alert message(s) undelivered after %.0f s", remaining, self.flush_timeout
            )
        result = ProduceResult()
        for i, state in enumerate(status):
            if state == "":
                result.delivered += 1
            else:
                result.failed.append(i)
                result.errors.append(state or "not delivered before the flush timeout")
        return result
