"""Address normalisation: real-mail forms, IDN, plus tags, proxyAddresses."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.core.domain.addresses import (
    domain_of,
    normalize_address,
    normalize_domain,
    parse_proxy_addresses,
    strip_plus_tag,
)

NORMALISED = [
    ("bare", "jane@example.com", "jane@example.com"),
    ("uppercase_everywhere", "Jane.Doe@Example.COM", "jane.doe@example.com"),
    ("display_name_quoted_with_comma", '"Doe, Jane" <Jane.Doe@Example.COM>', "jane.doe@example.com"),
    ("display_name_unquoted", "Jane Doe <jane@example.com>", "jane@example.com"),
    ("display_name_with_angle_in_quotes", '"a>b <c>" <jane@example.com>', "jane@example.com"),
    ("angle_brackets_only", "<jane@example.com>", "jane@example.com"),
    ("surrounding_whitespace", "  \tjane@example.com \n", "jane@example.com"),
    ("whitespace_inside_angles", "Jane < jane@example.com >", "jane@example.com"),
    ("trailing_dot_in_domain", "jane@example.com.", "jane@example.com"),
    ("trailing_dots_in_domain", "jane@example.com..", "jane@example.com"),
    ("quoted_local_part_plain", '"jane"@example.com', "jane@example.com"),
    ("quoted_local_part_mixed_case", '"Jane.Doe"@Example.com', "jane.doe@example.com"),
    ("quoted_local_part_needs_quotes", '"Jane Doe"@example.com', '"jane doe"@example.com'),
    ("quoted_local_part_escaped_quote", r'"a\"b"@example.com', r'"a\"b"@example.com'),
    ("quoted_local_part_with_at", '"a@b"@example.com', '"a@b"@example.com'),
    ("comment_after", "jane@example.com (Jane Doe)", "jane@example.com"),
    ("comment_before_nested", "(the (real) Jane) jane@example.com", "jane@example.com"),
    ("mailto_prefix", "mailto:Jane@Example.com", "jane@example.com"),
    ("source_route", "<@relay.example:jane@example.com>", "jane@example.com"),
    ("outlook_single_quotes", "'jane@example.com'", "jane@example.com"),
    ("plus_tag_kept", "Jane+News@Example.com", "jane+news@example.com"),
    ("atext_specials", "o'brien!#$%&*/=?^_`{|}~-@example.com", "o'brien!#$%&*/=?^_`{|}~-@example.com"),
    ("idn_unicode", "jane@ü.example", "jane@xn--tda.example"),
    ("idn_unicode_uppercase", "jane@Ü.EXAMPLE", "jane@xn--tda.example"),
    ("idn_punycode", "jane@XN--TDA.example", "jane@xn--tda.example"),
    ("idn_multilabel", "info@bücher.köln.example", "info@xn--bcher-kva.xn--kln-sna.example"),
    ("idn_ideographic_full_stop", "jane@例え\u3002jp", "jane@xn--r8jz45g.jp"),
    ("utf8_local_part", "JÖRG@example.com", "jörg@example.com"),
    ("utf8_local_part_nfc", "jo\u0308rg@example.com", "j\u00f6rg@example.com"),
    ("domain_literal", "jane@[192.0.2.1]", "jane@[192.0.2.1]"),
    ("dotless_domain", "admin@localhost", "admin@localhost"),
    ("subdomain_and_digits", "a1@mail2.eu.example.co.uk", "a1@mail2.eu.example.co.uk"),
    ("underscore_in_domain", "a@my_host.example", "a@my_host.example"),
]


@pytest.mark.parametrize(("raw", "expected"), [c[1:] for c in NORMALISED], ids=[c[0] for c in NORMALISED])
def test_normalize_address(raw: str, expected: str) -> None:
    assert normalize_address(raw) == expected


NOT_ADDRESSES = [
    ("empty", ""),
    ("blank", "   "),
    ("no_at", "jane.example.com"),
    ("display_name_only", "Jane Doe"),
    ("x500_legacy_dn", "/O=EXCHANGELABS/OU=EXCHANGE ADMINISTRATIVE GROUP (FYDIBOHF23SPDLT)/CN=RECIPIENTS/CN=ab12-jane"),
    ("x500_lowercase", "/o=ExchangeLabs/ou=Exchange Administrative Group/cn=Recipients/cn=jane"),
    ("imceaex_encapsulated", "IMCEAEX-_o=ExchangeLabs_ou=Exchange+20Administrative_cn=jane@namprd01.prod.outlook.com"),
    ("empty_local", "@example.com"),
    ("empty_domain", "jane@"),
    ("only_dots_domain", "jane@..."),
    ("empty_label", "jane@example..com"),
    ("leading_dot_domain", "jane@.example.com"),
    ("space_in_local", "jane doe@example.com"),
    ("space_in_domain", "jane@exa mple.com"),
    ("bad_domain_chars", "jane@exa!mple.com"),
    ("two_addresses", "jane@example.com, bob@example.com"),
    ("two_angle_addresses", "Jane <jane@example.com> Bob <bob@example.com>"),
    ("unclosed_angle", "Jane <jane@example.com"),
    ("stray_close_angle", "jane@example.com>"),
    ("text_after_angle", "<jane@example.com> trailing"),
    ("unbalanced_quote", '"Jane <jane@example.com>'),
    ("unbalanced_comment", "jane@example.com (Jane"),
    ("stray_close_paren", "jane@example.com)"),
    ("empty_quoted_local", '""@example.com'),
    ("smtp_proxy_prefix", "SMTP:jane@example.com"),
    ("label_too_long", "jane@" + "a" * 64 + ".com"),
    ("undisclosed_recipients_group", "undisclosed-recipients:;"),
    ("control_char", "ja\x00ne@example.com"),
    ("huge", "a" * 5000 + "@example.com"),
]


@pytest.mark.parametrize("raw", [c[1] for c in NOT_ADDRESSES], ids=[c[0] for c in NOT_ADDRESSES])
def test_not_an_address(raw: str) -> None:
    assert normalize_address(raw) is None


def test_idn_forms_compare_equal() -> None:
    assert normalize_address("Jürgen@Bücher.Example") == normalize_address("jürgen@xn--bcher-kva.example")


@pytest.mark.parametrize(
    ("addr", "expected"),
    [
        ("user+tag@contoso.com", "user@contoso.com"),
        ("user+a+b@contoso.com", "user@contoso.com"),
        ("user@contoso.com", "user@contoso.com"),
        ("+tag@contoso.com", "+tag@contoso.com"),
        ('"user+tag x"@contoso.com', '"user+tag x"@contoso.com'),
        ("user@plus+domain.example", "user@plus+domain.example"),
    ],
    ids=["tag", "two_pluses", "no_tag", "leading_plus_kept", "quoted_kept", "plus_only_in_domain"],
)
def test_strip_plus_tag(addr: str, expected: str) -> None:
    assert strip_plus_tag(addr) == expected


def test_domain_of() -> None:
    assert domain_of("jane@example.com") == "example.com"
    assert domain_of('"a@b"@example.com') == "example.com"
    with pytest.raises(ValueError, match="not an email address"):
        domain_of("example.com")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Example.COM", "example.com"),
        ("example.com.", "example.com"),
        ("@example.com", "example.com"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("", None),
        ("exa mple.com", None),
        ("a..b", None),
    ],
    ids=["case", "trailing_dot", "leading_at", "idn", "empty", "space", "empty_label"],
)
def test_normalize_domain(raw: str, expected: str | None) -> None:
    assert normalize_domain(raw) == expected


def test_parse_proxy_addresses() -> None:
    values = [
        "SMTP:Jane.Doe@Contoso.com",
        "smtp:jane@contoso.onmicrosoft.com",
        "SmTp:JD@Contoso.com",
        "X500:/o=ExchangeLabs/ou=Exchange Administrative Group/cn=Recipients/cn=jane",
        "SIP:jane@contoso.com",
        "SPO:SPO_1234@SPO_abcd",
        "smtp:not an address",
        "jane-without-prefix@contoso.com",
        "",
    ]
    assert parse_proxy_addresses(values) == frozenset(
        {"jane.doe@contoso.com", "jane@contoso.onmicrosoft.com", "jd@contoso.com"}
    )


def test_parse_proxy_addresses_empty_and_duplicates() -> None:
    assert parse_proxy_addresses([]) == frozenset()
    assert parse_proxy_addresses(["SMTP:a@x.com", "smtp:A@X.COM"]) == frozenset({"a@x.com"})


_local = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._+-", min_size=1, max_size=12)
_label = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789üéÖ", min_size=1, max_size=10)
_domain = st.lists(_label, min_size=1, max_size=3).map(".".join)


@settings(max_examples=200, deadline=None)
@given(local=_local, domain=_domain, name=st.text(max_size=10).filter(lambda s: '"' not in s and "\\" not in s))
def test_normalisation_is_idempotent_and_ignores_case_and_wrapping(local: str, domain: str, name: str) -> None:
    raw = f"{local}@{domain}"
    canonical = normalize_address(raw)
    if canonical is None:
        return
    assert normalize_address(canonical) == canonical
    assert canonical == canonical.lower()
    assert normalize_address(raw.swapcase()) == canonical
    assert normalize_address(f'"{name}" <{raw}>') == canonical
    assert normalize_address(f"  {raw}.  ") == canonical
    assert domain_of(canonical).isascii()
