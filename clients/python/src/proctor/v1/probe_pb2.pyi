from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ProbeTopicsRequest(_message.Message):
    __slots__ = ("tenant", "delegation_path", "run_id", "topics")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    DELEGATION_PATH_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    TOPICS_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    delegation_path: _containers.RepeatedScalarFieldContainer[str]
    run_id: str
    topics: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, tenant: _Optional[str] = ..., delegation_path: _Optional[_Iterable[str]] = ..., run_id: _Optional[str] = ..., topics: _Optional[_Iterable[str]] = ...) -> None: ...

class TopicProbe(_message.Message):
    __slots__ = ("topic", "never_allowed", "rule_id", "reason", "error")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    NEVER_ALLOWED_FIELD_NUMBER: _ClassVar[int]
    RULE_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    topic: str
    never_allowed: bool
    rule_id: str
    reason: str
    error: str
    def __init__(self, topic: _Optional[str] = ..., never_allowed: _Optional[bool] = ..., rule_id: _Optional[str] = ..., reason: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class ProbeTopicsResponse(_message.Message):
    __slots__ = ("results", "policy_version")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[TopicProbe]
    policy_version: str
    def __init__(self, results: _Optional[_Iterable[_Union[TopicProbe, _Mapping]]] = ..., policy_version: _Optional[str] = ...) -> None: ...
