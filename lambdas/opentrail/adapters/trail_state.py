"""Per-trail logging state and delivery status in the ledger table (docs/trails.md, "Status").

One item per trail: ``pk = TRAILSTATE``, ``sk = <trail name>``, no TTL. Attributes (all
optional; a trail without an item is logging, as a CloudTrail trail is from its creation):

* ``isLogging`` (bool), ``startLoggingTime``, ``stopLoggingTime`` (the latest calls, as
  GetTrailStatus reports them), ``startLoggingTimes``, ``stopLoggingTimes`` (every call, the
  newest `MAX_LOGGING_CALLS`: the digester closes and restarts chains at each) — written only
  by StartLogging/StopLogging (the query API), the only writes of configuration state;
* ``latestDeliveryTime``/``latestDeliveryError``, ``latestDigestDeliveryTime``/
  ``latestDigestDeliveryError``, ``latestCloudWatchLogsDeliveryTime``/``...Error``,
  ``latestNotificationTime``/``latestNotificationError`` — written by the batcher and the
  digester after each delivery (`TrailStateStore.record`).

Times are epoch seconds (numbers), as GetTrailStatus returns them. `stopped()` is the one read
the batcher makes per run: the trails it must skip.

Multi-region (docs/trails.md): as in CloudTrail, StartLogging/StopLogging are called in the home
region and hold everywhere. A non-home region's store reads the logging attributes from the home
region's ledger (`home`) and keeps its own delivery status; it cannot set the logging state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any, Final

import boto3
from botocore.exceptions import ClientError

from opentrail.domain.stop_cycles import StopCycle, stop_cycles

TRAIL_STATE_PK: Final = "TRAILSTATE"
# (GetTrailStatus member, item attribute); times are epoch numbers, errors strings.
TIME_FIELDS: Final = {
    "StartLoggingTime": "startLoggingTime",
    "StopLoggingTime": "stopLoggingTime",
    "LatestDeliveryTime": "latestDeliveryTime",
    "LatestDigestDeliveryTime": "latestDigestDeliveryTime",
    "LatestCloudWatchLogsDeliveryTime": "latestCloudWatchLogsDeliveryTime",
    "LatestNotificationTime": "latestNotificationTime",
}
# The logging state: written by StartLogging/StopLogging, read from the home region's ledger.
LOGGING_ATTRIBUTES: Final = (
    "isLogging",
    "startLoggingTime",
    "stopLoggingTime",
    "startLoggingTimes",
    "stopLoggingTimes",
)
MAX_LOGGING_CALLS: Final = 100  # per list: far more than a digester run (hourly) can meet
ERROR_FIELDS: Final = {
    "LatestDeliveryError": "latestDeliveryError",
    "LatestDigestDeliveryError": "latestDigestDeliveryError",
    "LatestCloudWatchLogsDeliveryError": "latestCloudWatchLogsDeliveryError",
    "LatestNotificationError": "latestNotificationError",
}
# What `record` accepts: delivery kind -> (time attribute, error attribute).
KINDS: Final = {
    "delivery": ("latestDeliveryTime", "latestDeliveryError"),
    "digest": ("latestDigestDeliveryTime", "latestDigestDeliveryError"),
    "cloudWatchLogs": ("latestCloudWatchLogsDeliveryTime", "latestCloudWatchLogsDeliveryError"),
    "notification": ("latestNotificationTime", "latestNotificationError"),
    # OpenTrail's own (GetTrailStatus has no EventBridge member): kept in the item only.
    "eventBridge": ("latestEventBridgeDeliveryTime", "latestEventBridgeDeliveryError"),
}


class TrailStateError(RuntimeError):
    pass


def epoch(moment: datetime) -> Decimal:
    """Epoch seconds with milliseconds, as CloudTrail reports them (e.g. 1454022144.869)."""
    return Decimal(f"{moment.astimezone(UTC).timestamp():.3f}")


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class TrailStatus:
    """One trail's item, as read (`attributes` in the item's own names)."""

    attributes: Mapping[str, Any]

    @property
    def is_logging(self) -> bool:
        return bool(self.attributes.get("isLogging", True))

    def stop_cycles(self) -> list[StopCycle]:
        """Every stop with the start that ended it, oldest first (items written before the
        call lists existed: the latest stop and start)."""

        def calls(attribute: str) -> list[Any]:
            listed = self.attributes.get(f"{attribute}s")
            if listed is not None:
                return list(listed)
            return [self.attributes[attribute]] if attribute in self.attributes else []

        return stop_cycles(calls("stopLoggingTime"), calls("startLoggingTime"))

    def to_response(self) -> dict[str, Any]:
        """GetTrailStatus' response: IsLogging, the epoch times and errors present, and the
        legacy ISO-string members CloudTrail still returns."""
        reply: dict[str, Any] = {"IsLogging": self.is_logging}
        for member, attribute in TIME_FIELDS.items():
            if attribute in self.attributes:
                reply[member] = float(self.attributes[attribute])
        for member, attribute in ERROR_FIELDS.items():
            if self.attributes.get(attribute):
                reply[member] = str(self.attributes[attribute])
        if "LatestDeliveryTime" in reply:
            reply["LatestDeliveryAttemptTime"] = _iso(reply["LatestDeliveryTime"])
            reply["LatestDeliveryAttemptSucceeded"] = _iso(reply["LatestDeliveryTime"])
        if "LatestNotificationTime" in reply:
            reply["LatestNotificationAttemptTime"] = _iso(reply["LatestNotificationTime"])
            reply["LatestNotificationAttemptSucceeded"] = _iso(reply["LatestNotificationTime"])
        if "StartLoggingTime" in reply:
            reply["TimeLoggingStarted"] = _iso(reply["StartLoggingTime"])
        if "StopLoggingTime" in reply:
            reply["TimeLoggingStopped"] = _iso(reply["StopLoggingTime"])
        return reply


class TrailStateStore:
    def __init__(self, table: str, *, client: Any = None, home: TrailStateStore | None = None) -> None:
        self.table = table
        self._ddb = client or boto3.client("dynamodb")
        self.home = home  # a non-home region: the home region's store, source of the logging state

    def all(self) -> dict[str, TrailStatus]:
        """Every trail's item (one Query of the TRAILSTATE partition; and one of the home's)."""
        found = self._query()
        if self.home is None:
            return found
        home = self.home._query()
        return {name: _with_logging(found.get(name), home.get(name)) for name in sorted(found.keys() | home.keys())}

    def get(self, trail: str) -> TrailStatus:
        found = self._get(trail)
        return found if self.home is None else _with_logging(found, self.home._get(trail))

    def _query(self) -> dict[str, TrailStatus]:
        found: dict[str, TrailStatus] = {}
        start: dict[str, Any] | None = None
        try:
            while True:
                request: dict[str, Any] = {
                    "TableName": self.table,
                    "KeyConditionExpression": "pk = :pk",
                    "ExpressionAttributeValues": {":pk": {"S": TRAIL_STATE_PK}},
                    "ConsistentRead": True,
                }
                if start:
                    request["ExclusiveStartKey"] = start
                response = self._ddb.query(**request)
                for item in response.get("Items", []):
                    found[item["sk"]["S"]] = TrailStatus(_plain(item))
                start = response.get("LastEvaluatedKey")
                if not start:
                    return found
        except ClientError as error:
            raise TrailStateError(f"trail state read ({self.table}): {error}") from error

    def _get(self, trail: str) -> TrailStatus:
        try:
            item = self._ddb.get_item(TableName=self.table, Key=_key(trail), ConsistentRead=True).get("Item")
        except ClientError as error:
            raise TrailStateError(f"trail state read {trail} ({self.table}): {error}") from error
        return TrailStatus(_plain(item) if item else {})

    def stopped(self) -> frozenset[str]:
        """Names of the trails whose logging is stopped (StopLogging): the batcher skips them."""
        return frozenset(name for name, status in self.all().items() if not status.is_logging)

    def set_logging(self, trail: str, logging: bool, now: datetime) -> None:
        if self.home is not None:
            raise TrailStateError(f"trail {trail}: StartLogging/StopLogging are called in the home region")
        attribute = "startLoggingTime" if logging else "stopLoggingTime"
        try:
            updated = self._ddb.update_item(
                TableName=self.table,
                Key=_key(trail),
                UpdateExpression=(
                    f"SET isLogging = :logging, {attribute} = :now, "
                    f"{attribute}s = list_append(if_not_exists({attribute}s, :none), :call)"
                ),
                ExpressionAttributeValues={
                    ":logging": {"BOOL": logging},
                    ":now": {"N": str(epoch(now))},
                    ":none": {"L": []},
                    ":call": {"L": [{"N": str(epoch(now))}]},
                },
                ReturnValues="UPDATED_NEW",
            )
            excess = len(updated["Attributes"][f"{attribute}s"]["L"]) - MAX_LOGGING_CALLS
            if excess > 0:  # drop the oldest calls (a racing call may have dropped some: harmless)
                removed = ", ".join(f"{attribute}s[{index}]" for index in range(excess))
                self._ddb.update_item(TableName=self.table, Key=_key(trail), UpdateExpression=f"REMOVE {removed}")
        except ClientError as error:
            raise TrailStateError(f"trail state write {trail}: {error}") from error

    def record(self, trail: str, kind: str, now: datetime, error: str | None = None) -> None:
        """A delivery of `kind` (`KINDS`) happened at `now`: success sets the time and clears the
        error; a failure sets the error (the time of the last success stays)."""
        time_attribute, error_attribute = KINDS[kind]
        if error is None:
            self._update(
                trail, f"SET {time_attribute} = :now REMOVE {error_attribute}", {":now": {"N": str(epoch(now))}}
            )
        else:
            self._update(trail, f"SET {error_attribute} = :error", {":error": {"S": error[:1000]}})

    def _update(self, trail: str, expression: str, values: dict[str, Any]) -> None:
        try:
            self._ddb.update_item(
                TableName=self.table,
                Key=_key(trail),
                UpdateExpression=expression,
                ExpressionAttributeValues=values,
            )
        except ClientError as error:
            raise TrailStateError(f"trail state write {trail}: {error}") from error


def _key(trail: str) -> dict[str, Any]:
    return {"pk": {"S": TRAIL_STATE_PK}, "sk": {"S": trail}}


def _plain(item: Mapping[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, value in item.items():
        if "BOOL" in value:
            values[name] = value["BOOL"]
        elif "L" in value:  # the call lists: numbers
            values[name] = [Decimal(entry["N"]) for entry in value["L"] if "N" in entry]
        elif "N" in value:
            values[name] = Decimal(value["N"])
        elif "S" in value:
            values[name] = value["S"]
    return values


def _with_logging(own: TrailStatus | None, home: TrailStatus | None) -> TrailStatus:
    """This region's status with the home region's logging state."""
    values = {k: v for k, v in (own.attributes if own else {}).items() if k not in LOGGING_ATTRIBUTES}
    values.update({k: v for k, v in (home.attributes if home else {}).items() if k in LOGGING_ATTRIBUTES})
    return TrailStatus(values)


def trail_state_store(settings: Any, *, client: Any = None, home_client: Any = None) -> TrailStateStore:
    """The store of a function's settings (``LEDGER_TABLE``; in a non-home region also
    ``HOME_LEDGER_TABLE`` and ``HOME_REGION``, whose ledger holds the logging state)."""
    home = None
    if settings.home_ledger_table:
        home_client = home_client or _dynamodb(settings.home_region or None)
        home = TrailStateStore(settings.home_ledger_table, client=home_client)
    return TrailStateStore(settings.ledger_table, client=client, home=home)


@lru_cache(maxsize=4)
def _dynamodb(region: str | None) -> Any:
    """One client per region for the warm function (the query API builds a store per request)."""
    return boto3.client("dynamodb", region_name=region)
