from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Decision(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DECISION_UNSPECIFIED: _ClassVar[Decision]
    DECISION_ALLOW: _ClassVar[Decision]
    DECISION_DENY: _ClassVar[Decision]
    DECISION_REQUIRE_APPROVAL: _ClassVar[Decision]
DECISION_UNSPECIFIED: Decision
DECISION_ALLOW: Decision
DECISION_DENY: Decision
DECISION_REQUIRE_APPROVAL: Decision

class EvaluateRequest(_message.Message):
    __slots__ = ("request_id", "run_id", "tenant", "delegation_path", "topic", "risk_tags", "labels", "approval_id", "explain")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    DELEGATION_PATH_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    RISK_TAGS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_ID_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    run_id: str
    tenant: str
    delegation_path: _containers.RepeatedScalarFieldContainer[str]
    topic: str
    risk_tags: _containers.RepeatedScalarFieldContainer[str]
    labels: _containers.ScalarMap[str, str]
    approval_id: str
    explain: bool
    def __init__(self, request_id: _Optional[str] = ..., run_id: _Optional[str] = ..., tenant: _Optional[str] = ..., delegation_path: _Optional[_Iterable[str]] = ..., topic: _Optional[str] = ..., risk_tags: _Optional[_Iterable[str]] = ..., labels: _Optional[_Mapping[str, str]] = ..., approval_id: _Optional[str] = ..., explain: _Optional[bool] = ...) -> None: ...

class EvaluateResponse(_message.Message):
    __slots__ = ("decision", "rule_id", "reason", "policy_version", "decision_id", "approval_id", "matched_rule_ids", "derived_tags", "matched_rule_count")
    DECISION_FIELD_NUMBER: _ClassVar[int]
    RULE_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_ID_FIELD_NUMBER: _ClassVar[int]
    MATCHED_RULE_IDS_FIELD_NUMBER: _ClassVar[int]
    DERIVED_TAGS_FIELD_NUMBER: _ClassVar[int]
    MATCHED_RULE_COUNT_FIELD_NUMBER: _ClassVar[int]
    decision: Decision
    rule_id: str
    reason: str
    policy_version: str
    decision_id: str
    approval_id: str
    matched_rule_ids: _containers.RepeatedScalarFieldContainer[str]
    derived_tags: _containers.RepeatedScalarFieldContainer[str]
    matched_rule_count: int
    def __init__(self, decision: _Optional[_Union[Decision, str]] = ..., rule_id: _Optional[str] = ..., reason: _Optional[str] = ..., policy_version: _Optional[str] = ..., decision_id: _Optional[str] = ..., approval_id: _Optional[str] = ..., matched_rule_ids: _Optional[_Iterable[str]] = ..., derived_tags: _Optional[_Iterable[str]] = ..., matched_rule_count: _Optional[int] = ...) -> None: ...

class EvaluateBatchRequest(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[EvaluateRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[EvaluateRequest, _Mapping]]] = ...) -> None: ...

class ItemStatus(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class EvaluateBatchItem(_message.Message):
    __slots__ = ("response", "error")
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    response: EvaluateResponse
    error: ItemStatus
    def __init__(self, response: _Optional[_Union[EvaluateResponse, _Mapping]] = ..., error: _Optional[_Union[ItemStatus, _Mapping]] = ...) -> None: ...

class EvaluateBatchResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[EvaluateBatchItem]
    def __init__(self, results: _Optional[_Iterable[_Union[EvaluateBatchItem, _Mapping]]] = ...) -> None: ...
