"""HTML of the identity platform: the sign-in and consent page, and the error page."""

from __future__ import annotations

from html import escape

_STYLE = """
body{font-family:"Segoe UI",system-ui,sans-serif;background:#f2f2f2;margin:0}
main{max-width:440px;margin:48px auto;background:#fff;padding:36px 44px;box-shadow:0 2px 6px rgba(0,0,0,.2)}
h1{font-size:22px;font-weight:600;margin:0 0 16px}.brand{color:#737373;font-size:15px;margin-bottom:20px}
label{display:block;font-size:14px;margin:12px 0 4px}input[type=email]{width:100%;box-sizing:border-box;
padding:6px 0;border:0;border-bottom:1px solid #666;font-size:15px}ul{padding-left:20px;font-size:14px}
.error{color:#e81123;font-size:14px;margin:10px 0}.buttons{display:flex;flex-direction:row-reverse;gap:8px;
margin-top:24px}button{min-width:108px;padding:6px 12px;font-size:15px;border:0;cursor:pointer}
button.primary{background:#0067b8;color:#fff}button.secondary{background:#ccc;color:#000}
.code{font-family:monospace;font-size:12px;color:#555}
"""


def _page(title: str, content: str) -> str:
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_STYLE}</style></head>'
            f'<body><main><div class="brand">Microsoft 365 sandbox</div>{content}</main></body></html>')


_SCOPE_TEXT = {
    "openid": "Sign you in",
    "profile": "View your basic profile",
    "email": "View your email address",
    "offline_access": "Maintain access to data you have given it access to",
    "User.Read": "Sign you in and read your profile",
    "Mail.Read": "Read your mail",
    "Mail.ReadBasic": "Read basic properties of your mail",
    "Mail.ReadWrite": "Read and write access to your mail",
    "Mail.Send": "Send mail as you",
}


def sign_in_page(*, action: str, flow: str, login: str, client_id: str, scopes: tuple[str, ...],
                 error: str | None = None) -> str:
    """Sign-in (email address) and consent (requested permissions) in one form, posted to `action`."""
    items = "".join(f"<li>{escape(_SCOPE_TEXT.get(s, s))} <span class=\"code\">({escape(s)})</span></li>"
                    for s in scopes)
    problem = f'<p class="error" id="error" role="alert">{escape(error)}</p>' if error else ""
    content = f"""
<h1>Permissions requested</h1>
<form method="post" action="{escape(action)}">
  <input type="hidden" name="flow" value="{escape(flow)}">
  <label for="login">Email address</label>
  <input type="email" id="login" name="login" value="{escape(login)}" autocomplete="username" required>
  {problem}
  <p>The application <span class="code">{escape(client_id)}</span> would like to:</p>
  <ul id="scopes">{items}</ul>
  <p style="font-size:13px">Accepting allows this app to use your data as described.</p>
  <div class="buttons">
    <button type="submit" name="action" value="accept" class="primary">Accept</button>
    <button type="submit" name="action" value="cancel" class="secondary" formnovalidate>Cancel</button>
  </div>
</form>"""
    return _page("Sign in to your account", content)


def error_page(code: int, message: str) -> str:
    content = (f'<h1>Sorry, but we\'re having trouble signing you in.</h1>'
               f'<p class="error" id="error">AADSTS{code}: {escape(message)}</p>')
    return _page("Sign in to your account", content)
