"""Alert packaging: Rubin's Avro alert schema, cutouts, files and Kafka."""

from tasks.alerts.package import PackageAlertsConfig, PackageAlertsTask
from tasks.alerts.schema import AlertSchema, load_alert_schema

__all__ = ["AlertSchema", "PackageAlertsConfig", "PackageAlertsTask", "load_alert_schema"]
