"""Helpers for the knowledge tests: knowledge bases, uploads through the API, and eager
ingestion (the task's own code, called in the test process where no process boundary is
the point)."""

from __future__ import annotations

from typing import Any

from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from accounts.models import Membership, User, Workspace
from knowledge import ingestion
from knowledge.models import DocumentStatus, KnowledgeBase, KnowledgeDocument
from knowledge.services import kb_create
from knowledge.vectorstore import VectorStore

FAQ_ZH = {
    "订单状态.txt": "我想查询订单状态，请问在哪里可以看到物流信息？登录后在“我的订单”页面查看订单状态和物流。",
    "退款政策.txt": "退款会在审核通过后七个工作日内原路退回，请耐心等待。",
    "电子发票.txt": "电子发票会在确认收货后发送到您的邮箱，也可以在个人中心下载。",
    "修改密码.txt": "忘记密码时，点击登录页面的“忘记密码”，按照短信验证码的提示重新设置。",
    "配送范围.txt": "我们支持全国配送，偏远地区可能需要额外三到五天。",
}


def api(slug: str, path: str = "") -> str:
    return f"/api/w/{slug}/{path}"


def membership(workspace: Workspace, user: User) -> Membership:
    return Membership.objects.get(workspace=workspace, user=user)


def make_kb(
    workspace: Workspace, user: User, name: str = "Handbook", **kwargs: Any
) -> KnowledgeBase:
    return kb_create(workspace=workspace, acting=membership(workspace, user), name=name, **kwargs)


def upload(client: Client, slug: str, kb_id: int, files: dict[str, bytes]) -> Any:
    """POST the files as one multipart upload; the response."""
    return client.post(
        api(slug, f"knowledge-bases/{kb_id}/documents"),
        {"files": [SimpleUploadedFile(name, data) for name, data in files.items()]},
    )


def ingest_queued(kb: KnowledgeBase, *, store: VectorStore | None = None) -> list[str]:
    """Run ingestion of every queued document of `kb`, in order; what each ended as."""
    ids = list(
        KnowledgeDocument.objects.filter(knowledge_base=kb, status=DocumentStatus.QUEUED)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    return [ingestion.ingest(pk, store=store) for pk in ids]


def search(client: Client, slug: str, kb_id: int, query: str, **body: Any) -> Any:
    return client.post(
        api(slug, f"knowledge-bases/{kb_id}/search"),
        {"query": query, **body},
        content_type="application/json",
    )
