"""Trails: named deliveries with their own S3 prefix and event selectors (spec §7).

This first version knows CloudTrail's *basic* event selectors; advanced selectors, several
destinations and per-trail deliveries arrive with the trails issue without reshaping the
batcher, which only asks `Trail.selects(record)`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

ReadWriteType = Literal["ReadOnly", "WriteOnly", "All"]
DEFAULT_TRAIL_NAME: Final = "opentrail"
_TRAIL_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9]|[._-](?=[A-Za-z0-9])){1,126}[A-Za-z0-9]$")
_DATA_RESOURCE_TYPES: Final = frozenset({"AWS::S3::Object", "AWS::Lambda::Function", "AWS::DynamoDB::Table"})
# The "every resource of this type" values, and the event source each one stands for.
_ALL_RESOURCES: Final = {
    "arn:aws:s3": "s3.amazonaws.com",
    "arn:aws:lambda": "lambda.amazonaws.com",
    "arn:aws:dynamodb": "dynamodb.amazonaws.com",
}


class TrailError(ValueError):
    def __init__(self, trail: str, field_name: str, rule: str) -> None:
        super().__init__(f"trail {trail!r}: {field_name}: {rule}")
        self.trail = trail
        self.field = field_name
        self.rule = rule


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


@dataclass(frozen=True)
class Trail:
    name: str = DEFAULT_TRAIL_NAME
    s3_key_prefix: str | None = None
    event_selectors: tuple[EventSelector, ...] = field(default_factory=lambda: (EventSelector(),))

    def selects(self, record: Mapping[str, Any]) -> bool:
        return any(selector.selects(record) for selector in self.event_selectors)

    def to_dict(self) -> dict[str, Any]:
        return {
            "Name": self.name,
            "S3KeyPrefix": self.s3_key_prefix,
            "EventSelectors": [
                {
                    "ReadWriteType": s.read_write_type,
                    "IncludeManagementEvents": s.include_management_events,
                    "DataResources": [{"Type": d.type, "Values": list(d.values)} for d in s.data_resources],
                    "ExcludeManagementEventSources": list(s.exclude_management_event_sources),
                }
                for s in self.event_selectors
            ],
        }


def trail_from_dict(data: Mapping[str, Any]) -> Trail:
    """Build a trail from CloudTrail's own JSON shape (`Name`, `S3KeyPrefix`, `EventSelectors`)."""
    name = data.get("Name", DEFAULT_TRAIL_NAME)
    if not isinstance(name, str) or not _TRAIL_NAME.match(name):
        raise TrailError(str(name), "Name", "3-128 characters [A-Za-z0-9._-], starting and ending alphanumeric")
    prefix = data.get("S3KeyPrefix")
    if prefix is not None and (not isinstance(prefix, str) or not prefix or len(prefix) > 200 or prefix.endswith("/")):
        raise TrailError(name, "S3KeyPrefix", "1-200 characters with no trailing slash, or absent")
    raw_selectors = data.get("EventSelectors", [{}])
    if not isinstance(raw_selectors, list) or not 1 <= len(raw_selectors) <= 5:
        raise TrailError(name, "EventSelectors", "must be a list of 1 to 5 selectors")
    selectors = tuple(_selector(name, index, raw) for index, raw in enumerate(raw_selectors))
    return Trail(name=name, s3_key_prefix=prefix, event_selectors=selectors)


def _selector(trail: str, index: int, raw: Mapping[str, Any]) -> EventSelector:
    where = f"EventSelectors[{index}]"
    read_write = raw.get("ReadWriteType", "All")
    if read_write not in ("ReadOnly", "WriteOnly", "All"):
        raise TrailError(trail, f"{where}.ReadWriteType", "must be ReadOnly, WriteOnly or All")
    include = raw.get("IncludeManagementEvents", True)
    if not isinstance(include, bool):
        raise TrailError(trail, f"{where}.IncludeManagementEvents", "must be true or false")
    resources = []
    for position, item in enumerate(raw.get("DataResources", [])):
        if item.get("Type") not in _DATA_RESOURCE_TYPES:
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


def trails_from_json(text: str) -> tuple[Trail, ...]:
    """Parse the TRAILS setting (a JSON list of trails in CloudTrail's shape)."""
    data = json.loads(text)
    if not isinstance(data, list) or not 1 <= len(data) <= 5:
        raise TrailError("*", "trails", "must be a list of 1 to 5 trails")
    trails = tuple(trail_from_dict(item) for item in data)
    names = [trail.name for trail in trails]
    if len(set(names)) != len(names):
        raise TrailError("*", "Name", "trail names must be unique")
    return trails


def trails_to_json(trails: tuple[Trail, ...] | list[Trail]) -> str:
    return json.dumps([trail.to_dict() for trail in trails], separators=(",", ":"))
