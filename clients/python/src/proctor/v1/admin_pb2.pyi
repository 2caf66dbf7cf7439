import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetPolicyRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetPolicyResponse(_message.Message):
    __slots__ = ("policy_version", "source", "rule_count", "budget_count", "combining", "loaded_at", "last_reload_error", "last_reload_at", "text")
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    RULE_COUNT_FIELD_NUMBER: _ClassVar[int]
    BUDGET_COUNT_FIELD_NUMBER: _ClassVar[int]
    COMBINING_FIELD_NUMBER: _ClassVar[int]
    LOADED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_RELOAD_ERROR_FIELD_NUMBER: _ClassVar[int]
    LAST_RELOAD_AT_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    policy_version: str
    source: str
    rule_count: int
    budget_count: int
    combining: str
    loaded_at: _timestamp_pb2.Timestamp
    last_reload_error: str
    last_reload_at: _timestamp_pb2.Timestamp
    text: str
    def __init__(self, policy_version: _Optional[str] = ..., source: _Optional[str] = ..., rule_count: _Optional[int] = ..., budget_count: _Optional[int] = ..., combining: _Optional[str] = ..., loaded_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_reload_error: _Optional[str] = ..., last_reload_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., text: _Optional[str] = ...) -> None: ...

class ReloadPolicyRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReloadPolicyResponse(_message.Message):
    __slots__ = ("policy_version", "changed")
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    policy_version: str
    changed: bool
    def __init__(self, policy_version: _Optional[str] = ..., changed: _Optional[bool] = ...) -> None: ...

class WatchPolicyRequest(_message.Message):
    __slots__ = ("heartbeat_seconds",)
    HEARTBEAT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    heartbeat_seconds: int
    def __init__(self, heartbeat_seconds: _Optional[int] = ...) -> None: ...

class PolicySnapshot(_message.Message):
    __slots__ = ("policy_version", "text", "source", "heartbeat", "sent_at")
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_FIELD_NUMBER: _ClassVar[int]
    policy_version: str
    text: str
    source: str
    heartbeat: bool
    sent_at: _timestamp_pb2.Timestamp
    def __init__(self, policy_version: _Optional[str] = ..., text: _Optional[str] = ..., source: _Optional[str] = ..., heartbeat: _Optional[bool] = ..., sent_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
