"""English and Simplified Chinese: browser preference by default, the user's setting wins, and the
catalogue covers every UI string."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

import translations  # noqa: E402

from portal.models import User  # noqa: E402


def test_catalogues_are_complete_and_compiled():
    assert translations.check() == []


def test_browser_preference_picks_chinese(client):
    body = client.get("/login", headers={"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.5"}).get_data(as_text=True)
    assert "登录 Crater" in body and 'lang="zh-CN"' in body


def test_english_is_the_default(client):
    body = client.get("/login", headers={"Accept-Language": "fr"}).get_data(as_text=True)
    assert "Sign in to Crater" in body


def test_the_users_setting_wins_over_the_browser(client, make):
    uid = make.user("bob")
    client.login(uid)
    response = client.post("/settings/language", {"lang": "zh", "next": "/"})
    assert response.status_code == 303 and response.location == "/"
    assert make.query(lambda s: s.get(User, uid).language) == "zh"
    body = client.get("/", headers={"Accept-Language": "en"}).get_data(as_text=True)
    assert "我的账户" in body


def test_signed_out_choice_lives_in_the_session(client):
    client.post("/settings/language", {"lang": "zh", "next": "/login"})
    assert "登录 Crater" in client.get("/login", headers={"Accept-Language": "en"}).get_data(as_text=True)
    client.post("/settings/language", {"lang": "en", "next": "/login"})
    assert "Sign in to Crater" in client.get("/login").get_data(as_text=True)


def test_unknown_language_is_refused(client):
    response = client.post("/settings/language", {"lang": "xx", "next": "https://evil.example/"})
    assert response.status_code == 303 and response.location == "/"


def test_form_validation_messages_are_translated(client, make):
    client.login(make.user("root", role="admin", language="zh"))
    body = client.post("/admin/accounts/new", {"name": ""}).get_data(as_text=True)
    assert "该字段是必填字段" in body or "此字段是必需的" in body or "必填" in body


def test_domain_errors_are_translated(client, make):
    root = make.user("root", role="admin", language="zh")
    client.login(root)
    body = client.post(f"/admin/users/{root}/deactivate").get_data(as_text=True)
    assert "您不能停用自己。" in body
