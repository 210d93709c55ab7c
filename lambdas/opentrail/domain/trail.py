"""Trails: named deliveries with their own S3 prefix, event selectors and deliveries (spec §7).

A trail selects records with CloudTrail's *basic* event selectors (`EventSelector`) or its
*advanced* event selectors (`AdvancedEventSelector`), never both. `Trail.selects(record)` is
all the batcher asks. The JSON shape (the ``TRAILS`` setting, the ``trails`` context in
cdk.json) keeps CloudTrail's field names (``Name``, ``S3KeyPrefix``, ``EventSelectors``,
``AdvancedEventSelectors``, ``InsightSelectors``, ``LogFileValidationEnabled``,
``IncludeGlobalServiceEvents``, ``IsMultiRegionTrail``) plus OpenTrail's ``Deliveries``
(CloudWatch Logs, EventBridge, SNS; docs/trails.md). Every error is a `TrailError` naming the
trail and the field. Pure code: no I/O.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from opentrail.domain.insights.state import CALL_RATE, INSIGHT_TYPES

ReadWriteType = Literal["ReadOnly", "WriteOnly", "All"]
DEFAULT_TRAIL_NAME: Final = "opentrail"
MAX_TRAILS: Final = 5
MAX_EVENT_SELECTORS: Final = 5
MAX_DATA_RESOURCES: Final = 250
MAX_ADVANCED_VALUES: Final = 500
_TRAIL_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9]|[._-](?=[A-Za-z0-9])){1,126}[A-Za-z0-9]$")
_IP_LIKE = re.compile(r"^\d{1,3}(?:\.\d{1,3}){3}$")
_DATA_RESOURCE_TYPES: Final = frozenset({"AWS::S3::Object", "AWS::Lambda::Function", "AWS::DynamoDB::Table"})
# The "every resource of this type" values, and the event source each one stands for.
_ALL_RESOURCES: Final = {
    "arn:aws:s3": "s3.amazonaws.com",
    "arn:aws:lambda": "lambda.amazonaws.com",
    "arn:aws:dynamodb": "dynamodb.amazonaws.com",
}
# Events of global services (recorded once, not per region); IncludeGlobalServiceEvents=false drops them.
GLOBAL_SERVICE_SOURCES: Final = frozenset(
    {"iam.amazonaws.com", "cloudfront.amazonaws.com", "route53.amazonaws.com", "organizations.amazonaws.com"}
)

# -- advanced event selectors (spec §7.3) ------------------------------------------------------

OPERATORS: Final = ("Equals", "StartsWith", "EndsWith", "NotEquals", "NotStartsWith", "NotEndsWith")
EVENT_CATEGORIES: Final = ("Management", "Data", "NetworkActivity")
# Fields a trail's advanced selector may use, per eventCategory; (required fields).
ADVANCED_FIELDS: Final[dict[str, frozenset[str]]] = {
    "Management": frozenset({"eventCategory", "eventSource", "readOnly"}),
    "Data": frozenset(
        {
            "eventCategory",
            "resources.type",
            "resources.ARN",
            "eventName",
            "eventSource",
            "eventType",
            "readOnly",
            "sessionCredentialFromConsole",
            "userIdentity.arn",
        }
    ),
    "NetworkActivity": frozenset(
        {"eventCategory", "eventSource", "eventName", "errorCode", "vpcEndpointId", "userIdentity.arn"}
    ),
}
REQUIRED_FIELDS: Final[dict[str, frozenset[str]]] = {
    "Management": frozenset({"eventCategory"}),
    "Data": frozenset({"eventCategory", "resources.type"}),
    "NetworkActivity": frozenset({"eventCategory", "eventSource"}),
}
EQUALS_ONLY: Final = frozenset({"readOnly", "eventCategory", "resources.type"})
_FIELD_NAME = re.compile(r"^[\w.|]{1,1000}$")

_LOG_GROUP_NAME = re.compile(r"^[.\-_/#A-Za-z0-9]{1,512}$")
_TOPIC_NAME = re.compile(r"^[A-Za-z0-9_-]{1,256}$")


class TrailError(ValueError):
    def __init__(self, trail: str, field_name: str, rule: str) -> None:
        super().__init__(f"trail {trail!r}: {field_name}: {rule}")
        self.trail = trail
        self.field = field_name
        self.rule = rule


# -- basic event selectors (spec §7.2) ---------------------------------------------------------


@dataclass(frozen=True)
class DataResource:
    type: str  # AWS::S3::Object | AWS::Lambda::Function | AWS::DynamoDB::Table
    values: tuple[str, ...]

    def matches(self, record: Mapping[str, Any]) -> bool:
        source = record.get("eventSource")
        if any(value in _ALL_RESOURCES and _ALL_RESOURCES[value] == source for value in self.values):
            return True
        for resource in record.get("resources") or ():
            kind = resource.get("type")
            # ListObjects and friends name the objects by prefix (ARNPrefix) and the bucket.
            arn = str(resource.get("ARN") or resource.get("ARNPrefix") or "")
            if self.type == "AWS::S3::Object":
                if kind == "AWS::S3::Object" and any(arn.startswith(value) for value in self.values):
                    return True
                if kind == "AWS::S3::Bucket" and any(f"{arn}/" == value for value in self.values):
                    return True
            elif kind == self.type and arn in self.values:
                return True
        return False

    @property
    def counted_values(self) -> int:
        """Values counted against the 250 data resources (the "all" values are not)."""
        return sum(value not in _ALL_RESOURCES for value in self.values)


@dataclass(frozen=True)
class EventSelector:
    read_write_type: ReadWriteType = "All"
    include_management_events: bool = True
    data_resources: tuple[DataResource, ...] = ()
    exclude_management_event_sources: tuple[str, ...] = ()

    def selects(self, record: Mapping[str, Any]) -> bool:
        read_only = record.get("readOnly")
        if self.read_write_type == "ReadOnly" and read_only is not True:
            return False
        if self.read_write_type == "WriteOnly" and read_only is True:
            return False
        category = record.get("eventCategory", "Management")
        if category == "Management":
            return (
                self.include_management_events
                and record.get("eventSource") not in self.exclude_management_event_sources
            )
        if category == "Data":
            return any(resource.matches(record) for resource in self.data_resources)
        return False

    def to_dict(self) -> dict[str, Any]:
        """CloudTrail's shape (GetEventSelectors): every member present."""
        return {
            "ReadWriteType": self.read_write_type,
            "IncludeManagementEvents": self.include_management_events,
            "DataResources": [{"Type": d.type, "Values": list(d.values)} for d in self.data_resources],
            "ExcludeManagementEventSources": list(self.exclude_management_event_sources),
        }


# -- advanced event selectors (spec §7.3) ------------------------------------------------------


def field_values(record: Mapping[str, Any], name: str) -> str:
    """The record's value of a single-valued advanced-selector field, as text ("" when absent)."""
    if name == "eventCategory":
        return str(record.get("eventCategory") or "Management")
    if name == "readOnly":
        return "true" if record.get("readOnly") is True else "false"
    if name == "userIdentity.arn":
        identity = record.get("userIdentity")
        return str(identity.get("arn") or "") if isinstance(identity, Mapping) else ""
    value = record.get(name)
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def resource_values(record: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(type, ARN) of each of the record's resources (ARNPrefix for bucket-level S3 calls)."""
    for resource in record.get("resources") or ():
        if isinstance(resource, Mapping):
            yield str(resource.get("type") or ""), str(resource.get("ARN") or resource.get("ARNPrefix") or "")


@dataclass(frozen=True)
class FieldSelector:
    """One condition: every operator present must hold (AND); the values of one operator are ORed
    (a negative operator holds when the value differs from all of them)."""

    field: str
    equals: tuple[str, ...] = ()
    starts_with: tuple[str, ...] = ()
    ends_with: tuple[str, ...] = ()
    not_equals: tuple[str, ...] = ()
    not_starts_with: tuple[str, ...] = ()
    not_ends_with: tuple[str, ...] = ()

    def operators(self) -> Iterator[tuple[str, tuple[str, ...]]]:
        for name, values in zip(
            OPERATORS,
            (self.equals, self.starts_with, self.ends_with, self.not_equals, self.not_starts_with, self.not_ends_with),
            strict=True,
        ):
            if values:
                yield name, values

    def holds(self, value: str) -> bool:
        if self.equals and value not in self.equals:
            return False
        if self.starts_with and not value.startswith(self.starts_with):
            return False
        if self.ends_with and not value.endswith(self.ends_with):
            return False
        if value in self.not_equals:
            return False
        if self.not_starts_with and value.startswith(self.not_starts_with):
            return False
        return not (self.not_ends_with and value.endswith(self.not_ends_with))

    @property
    def value_count(self) -> int:
        return sum(len(values) for _, values in self.operators())

    def to_dict(self) -> dict[str, Any]:
        return {"Field": self.field, **{name: list(values) for name, values in self.operators()}}


@dataclass(frozen=True)
class AdvancedEventSelector:
    """Conditions ANDed. ``resources.type``/``resources.ARN`` conditions must hold for one and
    the same resource of the record."""

    field_selectors: tuple[FieldSelector, ...]
    name: str | None = None

    def selects(self, record: Mapping[str, Any]) -> bool:
        plain = [f for f in self.field_selectors if not f.field.startswith("resources.")]
        if not all(f.holds(field_values(record, f.field)) for f in plain):
            return False
        by_resource = [f for f in self.field_selectors if f.field.startswith("resources.")]
        if not by_resource:
            return True
        return any(
            all(f.holds(kind if f.field == "resources.type" else arn) for f in by_resource)
            for kind, arn in resource_values(record)
        )

    @property
    def category(self) -> str:
        for selector in self.field_selectors:
            if selector.field == "eventCategory" and selector.equals:
                return selector.equals[0]
        return "Management"

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {} if self.name is None else {"Name": self.name}
        data["FieldSelectors"] = [f.to_dict() for f in self.field_selectors]
        return data


# -- insight selectors, deliveries, the trail --------------------------------------------------


@dataclass(frozen=True)
class InsightSelector:
    """CloudTrail's two types (ApiCallRateInsight, ApiErrorRateInsight) or OpenTrail's own
    (UnusualActivityInsight, MissingActivityInsight; docs/insights.md)."""

    insight_type: str
    event_categories: tuple[str, ...] = ()

    @property
    def categories(self) -> tuple[str, ...]:
        """The event categories analysed (CloudTrail's default: management events)."""
        return self.event_categories or ("Management",)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"InsightType": self.insight_type}
        if self.event_categories:
            data["EventCategories"] = list(self.event_categories)
        return data


@dataclass(frozen=True)
class Deliveries:
    """Where a trail's records go besides S3 (OpenTrail's names; docs/trails.md "Deliveries").

    `cloud_watch_logs`: log group name in the home region (None: off); `event_bridge`: the
    default bus of the region where the event was recorded; `sns_topic`: topic name in the home
    region, notified per delivered log file (None: off)."""

    cloud_watch_logs: str | None = None
    event_bridge: bool = False
    sns_topic: str | None = None

    @property
    def any(self) -> bool:
        return self.cloud_watch_logs is not None or self.event_bridge or self.sns_topic is not None

    def to_dict(self) -> dict[str, Any]:
        return {"CloudWatchLogs": self.cloud_watch_logs, "EventBridge": self.event_bridge, "SnsTopic": self.sns_topic}


def _default_selectors() -> tuple[EventSelector, ...]:
    return (EventSelector(),)


# Every Insights type on management events: the default trail's Insights (docs/insights.md).
ALL_INSIGHTS: Final = tuple(InsightSelector(insight_type=kind) for kind in INSIGHT_TYPES)


def _read_only_only(selector: AdvancedEventSelector) -> bool:
    """Does the selector keep read-only events only (readOnly Equals ["true"])?"""
    return any(f.field == "readOnly" and f.equals == ("true",) for f in selector.field_selectors)


@dataclass(frozen=True)
class Trail:
    name: str = DEFAULT_TRAIL_NAME
    s3_key_prefix: str | None = None
    event_selectors: tuple[EventSelector, ...] = field(default_factory=_default_selectors)
    advanced_event_selectors: tuple[AdvancedEventSelector, ...] = ()
    insight_selectors: tuple[InsightSelector, ...] = ()
    log_file_validation_enabled: bool = True
    include_global_service_events: bool = True
    is_multi_region_trail: bool = True
    deliveries: Deliveries = field(default_factory=Deliveries)

    def selects(self, record: Mapping[str, Any]) -> bool:
        if not self.include_global_service_events and record.get("eventSource") in GLOBAL_SERVICE_SOURCES:
            return False
        if self.advanced_event_selectors:
            return any(selector.selects(record) for selector in self.advanced_event_selectors)
        return any(selector.selects(record) for selector in self.event_selectors)

    @property
    def has_custom_event_selectors(self) -> bool:
        return bool(self.advanced_event_selectors) or self.event_selectors != _default_selectors()

    @property
    def has_insight_selectors(self) -> bool:
        return bool(self.insight_selectors)

    @property
    def insight_types(self) -> frozenset[str]:
        return frozenset(s.insight_type for s in self.insight_selectors)

    @property
    def insight_categories(self) -> frozenset[str]:
        """The event categories this trail's Insights analyse (empty: no Insights)."""
        return frozenset(c for s in self.insight_selectors for c in s.categories)

    def logs(self, category: str, *, writes: bool = False) -> bool:
        """Does some selector of this trail log events of `category` (write events, if `writes`)?"""
        if self.advanced_event_selectors:
            return any(
                s.category == category and not (writes and _read_only_only(s)) for s in self.advanced_event_selectors
            )
        if category == "Management":
            return any(
                s.include_management_events and not (writes and s.read_write_type == "ReadOnly")
                for s in self.event_selectors
            )
        if category == "Data":
            return any(
                s.data_resources and not (writes and s.read_write_type == "ReadOnly") for s in self.event_selectors
            )
        return False

    def arn(self, home_region: str, account: str) -> str:
        return f"arn:aws:cloudtrail:{home_region}:{account}:trail/{self.name}"

    def records_in(self, region: str, home_region: str) -> bool:
        """Does this trail record events of `region`? (a single-region trail: its home only)"""
        return self.is_multi_region_trail or region == home_region

    def to_dict(self) -> dict[str, Any]:
        """CloudTrail's shape, compact: fields at their defaults are left out (the TRAILS
        environment variable shares Lambda's 4 KB environment limit)."""
        data: dict[str, Any] = {"Name": self.name}
        if self.s3_key_prefix is not None:
            data["S3KeyPrefix"] = self.s3_key_prefix
        if self.advanced_event_selectors:
            data["AdvancedEventSelectors"] = [s.to_dict() for s in self.advanced_event_selectors]
        elif self.event_selectors != _default_selectors():
            data["EventSelectors"] = [s.to_dict() for s in self.event_selectors]
        if self.insight_selectors:
            data["InsightSelectors"] = [s.to_dict() for s in self.insight_selectors]
        if not self.log_file_validation_enabled:
            data["LogFileValidationEnabled"] = False
        if not self.include_global_service_events:
            data["IncludeGlobalServiceEvents"] = False
        if not self.is_multi_region_trail:
            data["IsMultiRegionTrail"] = False
        if self.deliveries.any:
            data["Deliveries"] = self.deliveries.to_dict()
        return data


# -- parsing ------------------------------------------------------------------------------------

_TRAIL_KEYS: Final = frozenset(
    {
        "Name",
        "S3KeyPrefix",
        "EventSelectors",
        "AdvancedEventSelectors",
        "InsightSelectors",
        "LogFileValidationEnabled",
        "IncludeGlobalServiceEvents",
        "IsMultiRegionTrail",
        "Deliveries",
    }
)


def trail_from_dict(data: Mapping[str, Any], *, default_log_file_validation: bool = True) -> Trail:
    """Build a trail from CloudTrail's JSON shape (plus ``Deliveries``); raises TrailError."""
    name = data.get("Name", DEFAULT_TRAIL_NAME)
    if not isinstance(name, str) or not _TRAIL_NAME.match(name) or _IP_LIKE.match(name):
        raise TrailError(
            str(name), "Name", "3-128 characters [A-Za-z0-9._-], starting and ending alphanumeric, not an IP address"
        )
    unknown = sorted(set(data) - _TRAIL_KEYS)
    if unknown:
        raise TrailError(name, unknown[0], f"unknown field; known: {', '.join(sorted(_TRAIL_KEYS))}")
    prefix = data.get("S3KeyPrefix")
    if prefix is not None and (not isinstance(prefix, str) or not prefix or len(prefix) > 200 or prefix.endswith("/")):
        raise TrailError(name, "S3KeyPrefix", "1-200 characters with no trailing slash, or absent")
    if data.get("EventSelectors") is not None and data.get("AdvancedEventSelectors") is not None:
        raise TrailError(
            name, "AdvancedEventSelectors", "a trail has EventSelectors or AdvancedEventSelectors, not both"
        )
    basic: tuple[EventSelector, ...] = ()
    advanced: tuple[AdvancedEventSelector, ...] = ()
    if data.get("AdvancedEventSelectors") is not None:
        advanced = _advanced_selectors(name, data["AdvancedEventSelectors"])
    else:
        raw_selectors = data.get("EventSelectors", [{}])
        if not isinstance(raw_selectors, list) or not 1 <= len(raw_selectors) <= MAX_EVENT_SELECTORS:
            raise TrailError(name, "EventSelectors", f"must be a list of 1 to {MAX_EVENT_SELECTORS} selectors")
        basic = tuple(_selector(name, index, raw) for index, raw in enumerate(raw_selectors))
        counted = sum(resource.counted_values for selector in basic for resource in selector.data_resources)
        if counted > MAX_DATA_RESOURCES:
            raise TrailError(
                name,
                "EventSelectors",
                f"at most {MAX_DATA_RESOURCES} data resources across all selectors (got {counted}; "
                "the all-resources values arn:aws:s3, arn:aws:lambda, arn:aws:dynamodb are not counted)",
            )
    trail = Trail(
        name=name,
        s3_key_prefix=prefix,
        event_selectors=basic,
        advanced_event_selectors=advanced,
        insight_selectors=_insight_selectors(name, data.get("InsightSelectors", [])),
        log_file_validation_enabled=_flag(name, data, "LogFileValidationEnabled", default_log_file_validation),
        include_global_service_events=_flag(name, data, "IncludeGlobalServiceEvents", True),
        is_multi_region_trail=_flag(name, data, "IsMultiRegionTrail", True),
        deliveries=_deliveries(name, data.get("Deliveries", {})),
    )
    _check_insights_input(trail)
    return trail


def _check_insights_input(trail: Trail) -> None:
    """Insights analyse what the trail logs: a type needs the events it looks at (CloudTrail's
    InvalidInsightSelectorsException; ApiCallRateInsight looks at write events only)."""
    for index, selector in enumerate(trail.insight_selectors):
        writes = selector.insight_type == CALL_RATE
        for category in selector.categories:
            if not trail.logs(category, writes=writes):
                what = f"{'write ' if writes else ''}{category.lower()} events"
                raise TrailError(
                    trail.name,
                    f"InsightSelectors[{index}]",
                    f"{selector.insight_type} on {category} events needs the trail to log {what}",
                )


def _flag(trail: str, data: Mapping[str, Any], key: str, default: bool) -> bool:
    value = data.get(key, default)
    if not isinstance(value, bool):
        raise TrailError(trail, key, "must be true or false")
    return value


def _selector(trail: str, index: int, raw: Any) -> EventSelector:
    where = f"EventSelectors[{index}]"
    if not isinstance(raw, Mapping):
        raise TrailError(trail, where, "must be an object")
    read_write = raw.get("ReadWriteType", "All")
    if read_write not in ("ReadOnly", "WriteOnly", "All"):
        raise TrailError(trail, f"{where}.ReadWriteType", "must be ReadOnly, WriteOnly or All")
    include = raw.get("IncludeManagementEvents", True)
    if not isinstance(include, bool):
        raise TrailError(trail, f"{where}.IncludeManagementEvents", "must be true or false")
    resources = []
    raw_resources = raw.get("DataResources", [])
    if not isinstance(raw_resources, list):
        raise TrailError(trail, f"{where}.DataResources", "must be a list")
    for position, item in enumerate(raw_resources):
        if not isinstance(item, Mapping) or item.get("Type") not in _DATA_RESOURCE_TYPES:
            raise TrailError(
                trail, f"{where}.DataResources[{position}].Type", f"must be one of {sorted(_DATA_RESOURCE_TYPES)}"
            )
        values = item.get("Values", [])
        if not isinstance(values, list) or not values or not all(isinstance(v, str) and v for v in values):
            raise TrailError(trail, f"{where}.DataResources[{position}].Values", "must be a non-empty list of ARNs")
        resources.append(DataResource(type=item["Type"], values=tuple(values)))
    excluded = raw.get("ExcludeManagementEventSources", [])
    if not isinstance(excluded, list) or not set(excluded) <= {"kms.amazonaws.com", "rdsdata.amazonaws.com"}:
        raise TrailError(
            trail, f"{where}.ExcludeManagementEventSources", "may list only kms.amazonaws.com and rdsdata.amazonaws.com"
        )
    return EventSelector(
        read_write_type=read_write,
        include_management_events=include,
        data_resources=tuple(resources),
        exclude_management_event_sources=tuple(excluded),
    )


def _advanced_selectors(trail: str, raw: Any) -> tuple[AdvancedEventSelector, ...]:
    if not isinstance(raw, list) or not raw:
        raise TrailError(trail, "AdvancedEventSelectors", "must be a non-empty list of selectors")
    selectors = tuple(_advanced_selector(trail, index, item) for index, item in enumerate(raw))
    values = sum(f.value_count for selector in selectors for f in selector.field_selectors)
    if values > MAX_ADVANCED_VALUES:
        raise TrailError(
            trail,
            "AdvancedEventSelectors",
            f"at most {MAX_ADVANCED_VALUES} values across all conditions (got {values})",
        )
    return selectors


def _advanced_selector(trail: str, index: int, raw: Any) -> AdvancedEventSelector:
    where = f"AdvancedEventSelectors[{index}]"
    if not isinstance(raw, Mapping):
        raise TrailError(trail, where, "must be an object")
    unknown = sorted(set(raw) - {"Name", "FieldSelectors"})
    if unknown:
        raise TrailError(trail, f"{where}.{unknown[0]}", "unknown field; known: Name, FieldSelectors")
    name = raw.get("Name")
    if name is not None and (not isinstance(name, str) or not 1 <= len(name) <= 1000):
        raise TrailError(trail, f"{where}.Name", "1-1000 characters, or absent")
    raw_fields = raw.get("FieldSelectors")
    if not isinstance(raw_fields, list) or not raw_fields:
        raise TrailError(trail, f"{where}.FieldSelectors", "must be a non-empty list of conditions")
    fields = tuple(_field_selector(trail, f"{where}.FieldSelectors[{i}]", item) for i, item in enumerate(raw_fields))
    categories = [f for f in fields if f.field == "eventCategory"]
    if len(categories) != 1 or len(categories[0].equals) != 1 or categories[0].equals[0] not in EVENT_CATEGORIES:
        raise TrailError(
            trail,
            f"{where}.FieldSelectors",
            f"needs exactly one eventCategory condition: Equals one of {', '.join(EVENT_CATEGORIES)}",
        )
    category = categories[0].equals[0]
    for position, selector in enumerate(fields):
        if selector.field not in ADVANCED_FIELDS[category]:
            raise TrailError(
                trail,
                f"{where}.FieldSelectors[{position}].Field",
                f"{selector.field!r} is not a field of {category} selectors on a trail; "
                f"allowed: {', '.join(sorted(ADVANCED_FIELDS[category]))}",
            )
    present = {selector.field for selector in fields}
    missing = sorted(REQUIRED_FIELDS[category] - present)
    if missing:
        raise TrailError(trail, f"{where}.FieldSelectors", f"{category} selectors need a {missing[0]} condition")
    for position, selector in enumerate(fields):
        if selector.field == "resources.type" and len(selector.equals) != 1:
            raise TrailError(
                trail, f"{where}.FieldSelectors[{position}].Equals", "resources.type: Equals exactly one resource type"
            )
    return AdvancedEventSelector(field_selectors=fields, name=name)


_OPERATOR_ATTRIBUTES: Final = dict(
    zip(
        OPERATORS, ("equals", "starts_with", "ends_with", "not_equals", "not_starts_with", "not_ends_with"), strict=True
    )
)


def _field_selector(trail: str, where: str, raw: Any) -> FieldSelector:
    if not isinstance(raw, Mapping):
        raise TrailError(trail, where, "must be an object")
    name = raw.get("Field")
    if not isinstance(name, str) or not _FIELD_NAME.match(name):
        raise TrailError(trail, f"{where}.Field", "1-1000 characters [A-Za-z0-9._]")
    unknown = sorted(set(raw) - {"Field", *OPERATORS})
    if unknown:
        raise TrailError(trail, f"{where}.{unknown[0]}", f"unknown operator; operators: {', '.join(OPERATORS)}")
    values: dict[str, tuple[str, ...]] = {}
    for operator in OPERATORS:
        if operator not in raw:
            continue
        items = raw[operator]
        if (
            not isinstance(items, list)
            or not items
            or not all(isinstance(v, str) and 1 <= len(v) <= 2048 for v in items)
        ):
            raise TrailError(trail, f"{where}.{operator}", "must be a non-empty list of 1-2048 character strings")
        if operator != "Equals" and name in EQUALS_ONLY:
            raise TrailError(trail, f"{where}.{operator}", f"{name} accepts only Equals")
        values[_OPERATOR_ATTRIBUTES[operator]] = tuple(items)
    if not values:
        raise TrailError(trail, where, f"needs at least one operator: {', '.join(OPERATORS)}")
    if name == "readOnly" and not set(values["equals"]) <= {"true", "false"}:
        raise TrailError(trail, f"{where}.Equals", 'readOnly: Equals "true" or "false"')
    return FieldSelector(field=name, **values)


def _insight_selectors(trail: str, raw: Any) -> tuple[InsightSelector, ...]:
    if not isinstance(raw, list):
        raise TrailError(trail, "InsightSelectors", "must be a list")
    selectors: list[InsightSelector] = []
    for index, item in enumerate(raw):
        where = f"InsightSelectors[{index}]"
        if not isinstance(item, Mapping) or item.get("InsightType") not in INSIGHT_TYPES:
            raise TrailError(trail, f"{where}.InsightType", f"must be one of {', '.join(INSIGHT_TYPES)}")
        categories = item.get("EventCategories", [])
        if not isinstance(categories, list) or not set(categories) <= {"Management", "Data"}:
            raise TrailError(trail, f"{where}.EventCategories", "may list only Management and Data")
        if len(set(categories)) != len(categories):
            raise TrailError(trail, f"{where}.EventCategories", "each category at most once")
        selectors.append(InsightSelector(insight_type=item["InsightType"], event_categories=tuple(categories)))
    types = [s.insight_type for s in selectors]
    if len(set(types)) != len(types):
        raise TrailError(trail, "InsightSelectors", "each InsightType at most once")
    return tuple(selectors)


def _deliveries(trail: str, raw: Any) -> Deliveries:
    if not isinstance(raw, Mapping):
        raise TrailError(trail, "Deliveries", "must be an object")
    unknown = sorted(set(raw) - {"CloudWatchLogs", "EventBridge", "SnsTopic"})
    if unknown:
        raise TrailError(trail, f"Deliveries.{unknown[0]}", "unknown; known: CloudWatchLogs, EventBridge, SnsTopic")
    group = raw.get("CloudWatchLogs")
    if group is True:
        group = f"opentrail/{trail}"
    elif group is False:
        group = None
    if group is not None and (not isinstance(group, str) or not _LOG_GROUP_NAME.match(group)):
        raise TrailError(
            trail, "Deliveries.CloudWatchLogs", "true, false, or a log group name (1-512 characters [.-_/#A-Za-z0-9])"
        )
    topic = raw.get("SnsTopic")
    if topic is True:
        topic = f"opentrail-{trail}".replace(".", "-")
    elif topic is False:
        topic = None
    if topic is not None and (not isinstance(topic, str) or not _TOPIC_NAME.match(topic)):
        raise TrailError(trail, "Deliveries.SnsTopic", "true, false, or a topic name (1-256 characters [A-Za-z0-9_-])")
    bridge = raw.get("EventBridge", False)
    if not isinstance(bridge, bool):
        raise TrailError(trail, "Deliveries.EventBridge", "must be true or false")
    return Deliveries(cloud_watch_logs=group, event_bridge=bridge, sns_topic=topic)


def default_trail_dict(name: str = DEFAULT_TRAIL_NAME, s3_key_prefix: str | None = None) -> dict[str, Any]:
    """The trail a deployment has without a ``trails`` list: every management event, every
    Insights type (docs/trails.md)."""
    data: dict[str, Any] = {"Name": name, "InsightSelectors": [s.to_dict() for s in ALL_INSIGHTS]}
    if s3_key_prefix is not None:
        data["S3KeyPrefix"] = s3_key_prefix
    return data


def trails_from_list(data: Any, *, default_log_file_validation: bool = True) -> tuple[Trail, ...]:
    """Validate a list of trails (1 to 5, unique names)."""
    if not isinstance(data, list) or not 1 <= len(data) <= MAX_TRAILS:
        raise TrailError("*", "trails", f"must be a list of 1 to {MAX_TRAILS} trails")
    for index, item in enumerate(data):
        if not isinstance(item, Mapping):
            raise TrailError(f"#{index}", "trails", "each trail must be an object")
    trails = tuple(trail_from_dict(item, default_log_file_validation=default_log_file_validation) for item in data)
    names = [trail.name for trail in trails]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise TrailError(duplicates[0], "Name", "trail names must be unique")
    return trails


def trails_from_json(text: str) -> tuple[Trail, ...]:
    """Parse the TRAILS setting (a JSON list of trails in CloudTrail's shape)."""
    return trails_from_list(json.loads(text))


def trails_to_json(trails: Sequence[Trail]) -> str:
    return json.dumps([trail.to_dict() for trail in trails], separators=(",", ":"))
