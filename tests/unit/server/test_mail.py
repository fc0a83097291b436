"""Mail between invocations stays within a namespace (a tenant's functions, or the
operator's): PostOffice's delivery, without sockets."""

from __future__ import annotations

from typing import Any

from stratus.protocol import messages as m
from stratus.protocol import serialization
from stratus.server.mail import PostOffice


def _office() -> PostOffice:
    no_io: Any = None  # delivery and boxes never touch the link or the caller
    return PostOffice(no_io, no_io, "e1", 1 << 20)


def _mail(recipient: str, text: str, namespace: str = "") -> m.Deliver:
    return m.Deliver(recipient, "sender", serialization.dumps(text, limit=1 << 20), namespace)


def _queued(office: PostOffice, invocation_id: str) -> list[Any]:
    return [serialization.loads(p) for _, p in office.box(invocation_id).queue]


def test_mail_reaches_a_running_invocation_of_its_namespace_only() -> None:
    office = _office()
    office.begin("acme-call", "acme::")
    office.begin("ops-call")
    office.deliver(_mail("acme-call", "from acme", "acme::"))
    office.deliver(_mail("acme-call", "from globex", "globex::"))
    office.deliver(_mail("acme-call", "from the operator"))
    office.deliver(_mail("ops-call", "from acme", "acme::"))
    office.deliver(_mail("ops-call", "from the operator"))
    assert _queued(office, "acme-call") == ["from acme"]
    assert _queued(office, "ops-call") == ["from the operator"]


def test_mail_kept_for_a_recipient_not_started_yet_is_sorted_when_it_starts() -> None:
    office = _office()
    office.deliver(_mail("later", "from globex", "globex::"))
    office.deliver(_mail("later", "from acme", "acme::"))
    office.begin("later", "acme::")
    assert _queued(office, "later") == ["from acme"]
