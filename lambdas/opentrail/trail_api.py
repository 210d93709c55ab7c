"""Trail operations of the query API (docs/trails.md, "Operations"), for
`opentrail.handlers.query.OPERATIONS`: DescribeTrails, GetTrail, GetTrailStatus,
GetEventSelectors, GetInsightSelectors, StartLogging, StopLogging.

The configuration is code (the ``TRAILS`` setting, from cdk.json): the read operations report
it in CloudTrail's shapes (spec §7.1). The only writes are StartLogging/StopLogging, which set
the trail's logging state item in the ledger table (`opentrail.adapters.trail_state`). Errors are
botocore's modelled exceptions (TrailNotFoundException, InvalidTrailNameException,
CloudTrailARNInvalidException, InsightNotEnabledException, ...).
"""

from __future__ import annotations

import re
from typing import Any, Final

from opentrail.domain.trail import Trail

_TRAIL_ARN = re.compile(r"^arn:aws[a-z-]*:cloudtrail:([a-z0-9-]+):(\d{12}):trail/(.+)$")
_NAME = re.compile(r"^[A-Za-z0-9._-]{3,128}$")
STATE_TABLE_MISSING: Final = "trail state needs LEDGER_TABLE (the ledger table): not configured"


def _error(code: str, message: str) -> Exception:
    from opentrail.handlers.query import ServiceError

    return ServiceError(code, message)


def home_region(call: Any) -> str:
    return str(getattr(call.settings, "home_region", "") or call.function_region)


def trail_shape(trail: Trail, call: Any) -> dict[str, Any]:
    """CloudTrail's ``Trail`` structure (absent string members are omitted)."""
    home = home_region(call)
    shape: dict[str, Any] = {"Name": trail.name, "S3BucketName": call.settings.log_bucket}
    if trail.s3_key_prefix is not None:
        shape["S3KeyPrefix"] = trail.s3_key_prefix
    if trail.deliveries.sns_topic is not None:
        shape["SnsTopicName"] = trail.deliveries.sns_topic
        shape["SnsTopicARN"] = f"arn:aws:sns:{home}:{call.account}:{trail.deliveries.sns_topic}"
    shape["IncludeGlobalServiceEvents"] = trail.include_global_service_events
    shape["IsMultiRegionTrail"] = trail.is_multi_region_trail
    shape["HomeRegion"] = home
    shape["TrailARN"] = trail.arn(home, call.account)
    shape["LogFileValidationEnabled"] = trail.log_file_validation_enabled
    if trail.deliveries.cloud_watch_logs is not None:
        group = trail.deliveries.cloud_watch_logs
        shape["CloudWatchLogsLogGroupArn"] = f"arn:aws:logs:{home}:{call.account}:log-group:{group}:*"
    if call.settings.log_kms_key_arn:
        shape["KmsKeyId"] = call.settings.log_kms_key_arn
    shape["HasCustomEventSelectors"] = trail.has_custom_event_selectors
    shape["HasInsightSelectors"] = trail.has_insight_selectors
    shape["IsOrganizationTrail"] = False
    return shape


def find_trail(call: Any, name: object, member: str = "Name") -> Trail:
    """The trail a request names (name or trail ARN); raises the modelled errors."""
    if name is None or name == "":
        raise _error("InvalidTrailNameException", f"{member}: required (a trail name or ARN)")
    if not isinstance(name, str):
        raise _error("InvalidTrailNameException", f"{member}: must be a string")
    trail_name = name
    if name.startswith("arn:"):
        match = _TRAIL_ARN.match(name)
        if match is None:
            raise _error("CloudTrailARNInvalidException", f"{member}: not a trail ARN: {name[:200]}")
        region, account, trail_name = match.groups()
        if account != call.account or region != home_region(call):
            raise _error("TrailNotFoundException", f"Unknown trail: {name} for the user: {call.account}")
    elif not _NAME.match(name):
        raise _error("InvalidTrailNameException", f"{member}: 3-128 characters [A-Za-z0-9._-]")
    trails: tuple[Trail, ...] = call.settings.trail_list
    for trail in trails:
        if trail.name == trail_name:
            return trail
    raise _error("TrailNotFoundException", f"Unknown trail: {name} for the user: {call.account}")


def describe_trails(call: Any) -> dict[str, Any]:
    names = call.body.get("trailNameList")
    if names is not None and (not isinstance(names, list) or not all(isinstance(n, str) for n in names)):
        raise _error("InvalidTrailNameException", "trailNameList: must be a list of trail names or ARNs")
    include_shadow = call.body.get("includeShadowTrails", True)
    trails = list(call.settings.trail_list)
    if not include_shadow and home_region(call) != call.function_region:
        trails = []  # every trail here is a shadow of a trail whose home is elsewhere
    if names:
        wanted = set()
        for name in names:
            try:
                wanted.add(find_trail(call, name, "trailNameList").name)
            except Exception as error:
                if getattr(error, "code", "") != "TrailNotFoundException":
                    raise
        trails = [trail for trail in trails if trail.name in wanted]
    return {"trailList": [trail_shape(trail, call) for trail in trails]}


def get_trail(call: Any) -> dict[str, Any]:
    return {"Trail": trail_shape(find_trail(call, call.body.get("Name")), call)}


def _state(call: Any) -> Any:
    table = getattr(call.settings, "ledger_table", "")
    if not table:
        return None
    from opentrail.adapters.trail_state import trail_state_store

    return trail_state_store(call.settings, client=getattr(call, "dynamodb", None))


def get_trail_status(call: Any) -> dict[str, Any]:
    trail = find_trail(call, call.body.get("Name"))
    store = _state(call)
    if store is None:
        return {"IsLogging": True}
    response: dict[str, Any] = store.get(trail.name).to_response()
    return response


def get_event_selectors(call: Any) -> dict[str, Any]:
    trail = find_trail(call, call.body.get("TrailName"), "TrailName")
    reply: dict[str, Any] = {"TrailARN": trail.arn(home_region(call), call.account)}
    if trail.advanced_event_selectors:
        reply["AdvancedEventSelectors"] = [selector.to_dict() for selector in trail.advanced_event_selectors]
    else:
        reply["EventSelectors"] = [selector.to_dict() for selector in trail.event_selectors]
    return reply


def get_insight_selectors(call: Any) -> dict[str, Any]:
    if call.body.get("EventDataStore"):
        raise _error("UnsupportedOperationException", "EventDataStore: OpenTrail has no event data stores")
    trail = find_trail(call, call.body.get("TrailName"), "TrailName")
    if not trail.insight_selectors:
        raise _error("InsightNotEnabledException", f"Trail {trail.name} does not have Insights enabled.")
    return {
        "TrailARN": trail.arn(home_region(call), call.account),
        "InsightSelectors": [selector.to_dict() for selector in trail.insight_selectors],
    }


def _set_logging(call: Any, logging: bool) -> dict[str, Any]:
    trail = find_trail(call, call.body.get("Name"))
    store = _state(call)
    if store is None:
        raise _error("OperationNotPermittedException", STATE_TABLE_MISSING)
    if store.home is not None:  # as CloudTrail: the logging state is set in the trail's home region
        raise _error(
            "InvalidHomeRegionException",
            f"Trail {trail.name} belongs to home region {home_region(call)}: call "
            f"{'StartLogging' if logging else 'StopLogging'} there.",
        )
    store.set_logging(trail.name, logging, call.now)
    return {}


def start_logging(call: Any) -> dict[str, Any]:
    return _set_logging(call, True)


def stop_logging(call: Any) -> dict[str, Any]:
    return _set_logging(call, False)


OPERATIONS: Final = {
    "DescribeTrails": describe_trails,
    "GetTrail": get_trail,
    "GetTrailStatus": get_trail_status,
    "GetEventSelectors": get_event_selectors,
    "GetInsightSelectors": get_insight_selectors,
    "StartLogging": start_logging,
    "StopLogging": stop_logging,
}
