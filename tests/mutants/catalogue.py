#!/usr/bin/env python3
"""The mutation catalogue: single-line bugs a reviewer would plant in the
security and compliance code, each one a behaviour the suite must defend.

Each entry names the file, the exact text of the one line's fragment to change
(it must occur `nth` time in that file: 1 = first) and its replacement, the
behaviour the bug breaks, and a hint (test binary and gtest filter) that
scripts/mutate.sh runs first, before the whole suite, to kill it quickly.

`./tests/mutants/catalogue.py` rewrites tests/mutants/NN-name.patch from the
current sources (run it after the code the mutants touch has moved; a fragment
that no longer exists is reported, not silently dropped). The patch files are
what scripts/mutate.sh applies.
"""
import difflib, os, pathlib, sys

M = []
def mutant(name, module, path, find, replace, breaks, hint, nth=1):
    M.append(dict(name=name, module=module, path=path, find=find, replace=replace, breaks=breaks, hint=hint, nth=nth))

# --- crypto ----------------------------------------------------------------
mutant("aead-nonce-zero", "crypto", "src/crypto/aead.cpp",
       "randombytes_buf(&out[9], kNonceSize);", "std::memset(&out[9], 0, kNonceSize);",
       "every seal reuses the all-zero nonce", "core_tests:Crypto*")
mutant("aead-field-name-unbound", "crypto", "src/crypto/aead.cpp",
       "ad.insert(ad.end(), field.begin(), field.end());", ";",
       "a sealed value moved to another field of the same subject still opens", "core_tests:Crypto*")
mutant("blind-index-unkeyed", "crypto", "src/crypto/blind_index.cpp",
       "normalised_value.size(), field_key.data(), SecretKey::kSize);", "normalised_value.size(), nullptr, 0);",
       "blind indexes are a plain hash: anyone can confirm a guessed email", "core_tests:Crypto*")
mutant("secret-key-zero", "crypto", "src/crypto/secret_key.cpp",
       "randombytes_buf(key.bytes_, kSize);", "sodium_memzero(key.bytes_, kSize);",
       "generated keys are all zero", "core_tests:Crypto*")
mutant("passphrase-check-skipped", "crypto", "src/crypto/keyring.cpp",
       "if (sodium_memcmp(expected.data(), check.data(), 32) != 0)", "if (false)",
       "a wrong passphrase is not refused up front", "core_tests:Keys*")

# --- access ----------------------------------------------------------------
mutant("capture-own-purpose-allowed", "access", "src/access/policy.cpp",
       "if (r.purposes.count(p))", "if (false)",
       "a role may capture consent for a purpose it uses", "core_tests:ConsentCapture.*")
mutant("visibility-default-plain", "access", "src/access/policy.cpp",
       "return it == role.visibility.end() ? Visibility::none : it->second;",
       "return it == role.visibility.end() ? Visibility::plain : it->second;",
       "a category a role was never given is shown in plaintext", "core_tests:PolicyMatrix*")
mutant("mask-email-plain", "access", "src/access/policy.cpp",
       'return first_char(value) + "***" + std::string(value.substr(at));', "return std::string(value);",
       "masked emails are shown whole", "core_tests:*Mask*")
mutant("mask-phone-plain", "access", "src/access/policy.cpp",
       'return "***-***-" + digits.substr(digits.size() - 4);', "return digits;",
       "masked phone numbers are shown whole", "core_tests:*Mask*")
mutant("revoked-token-accepted", "access", "src/access/tokens.cpp",
       'FROM tokens WHERE hash = ? AND revoked_at IS NULL"', 'FROM tokens WHERE hash = ?"',
       "a revoked token still authenticates", "core_tests:Service*")
mutant("lookup-by-masked-value", "access", "src/service/service.cpp",
       "if (pol->visibility(role, by) != access::Visibility::plain)",
       "if (pol->visibility(role, by) == access::Visibility::none)",
       "a role that sees a field masked can confirm a guessed value by lookup", "core_tests:RecordsPromises*")

# --- consent ---------------------------------------------------------------
mutant("withdrawal-loses-to-newer-grant-time", "consent", "src/consent/consent.cpp",
       '} else if (e.event != "granted") {',
       "} else if (false) {",
       "a withdrawal dated before the standing grant is ignored", "core_tests:ConsentWithdrawal.*")
mutant("expired-consent-shown-granted", "consent", "src/consent/consent.cpp",
       'if (s.state == "granted" && s.expires_us && *s.expires_us <= now) s.state = "expired";',
       'if (false) s.state = "expired";',
       "an expired grant is reported as granted", "core_tests:Consent*")
mutant("expired-consent-honoured", "consent", "src/consent/consent.cpp",
       "\" AND state = 'granted' AND (expires_at IS NULL OR expires_at > ?)\",",
       "\" AND state = 'granted' AND (expires_at IS NULL OR expires_at > ? OR 1 = 1)\",",
       "an expired grant still admits marketing reads and campaign fetches", "core_tests:Consent*")
mutant("denied-counts-as-consent", "consent", "src/consent/consent.cpp",
       "\" AND state = 'granted' AND (expires_at IS NULL OR expires_at > ?)\",",
       "\" AND state <> 'withdrawn' AND (expires_at IS NULL OR expires_at > ?)\",",
       "a recorded denial counts as consent", "core_tests:Consent*")
mutant("future-dated-grant", "consent", "src/consent/consent.cpp",
       'if (in.event == "granted" && at > now)', 'if (in.event == "granted" && at > now + kClockSkewUs)',
       "a grant dated minutes ahead masks a later withdrawal", "core_tests:ConsentWithdrawal.*")
mutant("double-opt-in-confirmed-at-once", "consent", "src/consent/consent.cpp",
       'e.status = in.double_opt_in ? "pending" : "confirmed";', 'e.status = "confirmed";',
       "a double opt-in counts before the subject confirms", "core_tests:ConsentCapture.*")
# A voided token is refused twice over (its status, and any later event for
# its purpose and channel), so dropping either check alone is an equivalent
# mutant; what a withdrawal must visibly do is void the pending grant.
mutant("withdrawal-leaves-token-pending", "consent", "src/consent/consent.cpp",
       "void_pending(*tx, subject, e.purpose, e.channel);", ";",
       "a withdrawal leaves an earlier double opt-in shown as pending, not voided", "core_tests:ConsentWithdrawal.*")
mutant("expired-token-confirms", "consent", "src/consent/consent.cpp",
       "if (expires && now > *expires) throw", "if (false) throw",
       "an expired double opt-in token still confirms", "core_tests:Consent*")
# A used token is also followed by its confirmation event, so without the
# "used" check it is still refused, but with the wrong reason.
mutant("token-reused", "consent", "src/consent/consent.cpp",
       "if (confirmed_by) throw", "if (false) throw",
       "a used confirmation token is refused as voided, not as already used", "core_tests:ConsentWithdrawal.*")
mutant("gpc-ignored", "consent", "src/service/service_consent.cpp",
       "if (gpc) {", "if (false) {",
       "Sec-GPC: 1 does not opt the subject out", "http_tests:*Gpc*")
mutant("objection-not-blocking-marketing", "consent", "src/service/service_consent.cpp",
       'if (meta.status != "active" || meta.restricted || meta.objected) return std::vector<std::string>{};',
       'if (meta.status != "active") return std::vector<std::string>{};',
       "restricted or objecting subjects still count as marketable", "core_tests:*PolicyMatrix*objected")

# --- records and reads -----------------------------------------------------
mutant("erase-keeps-dek", "records", "src/records/records.cpp",
       "\"UPDATE subjects SET status = 'erased', wrapped_dek = NULL, kek_version = NULL, fields = NULL,\"",
       "\"UPDATE subjects SET status = 'erased', kek_version = NULL, fields = NULL,\"",
       "erasure keeps the subject's data key: touchpoint notes stay decryptable", "core_tests:*Eras*")
mutant("erase-keeps-fields", "records", "src/records/records.cpp",
       "\"UPDATE subjects SET status = 'erased', wrapped_dek = NULL, kek_version = NULL, fields = NULL,\"",
       "\"UPDATE subjects SET status = 'erased', wrapped_dek = NULL, kek_version = NULL,\"",
       "erasure leaves the sealed field blob in the row", "core_tests:*Eras*")
mutant("campaign-serves-restricted", "records", "src/records/records.cpp",
       "AND s.restricted = 0 AND s.objected = 0", "AND s.objected = 0",
       "campaign fetch serves restricted subjects", "core_tests:*Campaign*")
mutant("campaign-unmasked", "records", "src/service/service_campaign.cpp",
       "line += Json(masked ? access::mask_value(impl_->schema.require(name), value) : value).dump();",
       "line += Json(value).dump();",
       "campaign fetch returns fields the role sees masked in plaintext", "core_tests:*Campaign*")
mutant("restricted-subject-readable", "records", "src/service/service.cpp",
       "if (meta.restricted && !allowed_when_restricted(pol, purpose_name))", "if (false)",
       "a restricted subject is read by any purpose", "core_tests:*Restrict*")
mutant("objected-subject-marketed", "records", "src/service/service.cpp",
       "    if (meta.objected)", "    if (false)",
       "marketing reads a subject that objected", "core_tests:*Object*")
mutant("erased-subject-not-hidden", "records", "src/service/service.cpp",
       'if (meta.status != "active") return std::pair{ErrorCode::not_found', 'if (meta.status == "none") return std::pair{ErrorCode::not_found',
       "an erased subject answers differently from an unknown one", "core_tests:PolicyMatrix*")
mutant("restricted-subject-updatable", "records", "src/service/service.cpp",
       "if (impl_->records->metadata(id).restricted)", "if (false)",
       "a restricted subject is changed by PATCH", "core_tests:*Restrict*", nth=1)
mutant("restricted-subject-deletable", "records", "src/service/service.cpp",
       "if (impl_->records->metadata(id).restricted)", "if (false)",
       "a restricted subject is erased by DELETE", "core_tests:*Restrict*", nth=2)

# --- data-subject requests and deadlines -----------------------------------
mutant("dsr-any-transition", "dsr", "src/dsr/dsr.cpp",
       "if (f == from) return one_of(tos, to);", "if (f == from) return true;",
       "a request completes without identity verification", "core_tests:Dsr*")
mutant("dsr-four-eyes-same-principal", "dsr", "src/service/service_dsr.cpp",
       "if (asked_by == actor.principal)", "if (false)",
       "the principal who asked also approves an erasure", "core_tests:Dsr*")
mutant("gdpr-extension-from-first-due", "dsr", "src/dsr/regulations.cpp",
       "return calendar_->deadline(received_us, total, *rules.calendar, rules.end);",
       "return calendar_->deadline(due(rules, type, received_us), rules.extend->period, *rules.calendar, rules.end);",
       "the extension is counted from the clipped first due date", "regulations_tests:*")
mutant("too-many-extensions", "dsr", "src/dsr/regulations.cpp",
       "extensions > rules.max_extensions)", "extensions > rules.max_extensions + 1)",
       "a request is extended more often than the law allows", "regulations_tests:*")
mutant("no-end-of-period-roll", "dsr", "src/util/calendar.cpp",
       "while (!cal.is_working_day(day)) ++day;", "while (false) ++day;",
       "a period ending on a weekend or holiday is not rolled (EU 1182/71 Art. 3(4))", "regulations_tests:*")
mutant("business-days-are-calendar-days", "dsr", "src/util/calendar.cpp",
       "if (cal.is_working_day(++day)) --left;", "if (++day != 0) --left;",
       "business-day periods count weekends and holidays", "regulations_tests:*")

# --- breach ----------------------------------------------------------------
mutant("breach-hours-as-minutes", "breach", "src/util/calendar.cpp",
       "if (p.hours) return start_us + std::int64_t{p.hours} * 3600 * 1000000;",
       "if (p.hours) return start_us + std::int64_t{p.hours} * 60 * 1000000;",
       "the 72-hour clock runs in minutes", "core_tests:Breach*")
mutant("breach-low-risk-notifies-individuals", "breach", "src/breach/breach.cpp",
       "if (!i.high_risk) d.required = false;", ";",
       "individuals must be told of a breach unlikely to be high risk", "core_tests:Breach*")

# --- retention -------------------------------------------------------------
mutant("retention-ignores-legal-hold", "retention", "src/retention/retention.cpp",
       "if (s.legal_hold) {", "if (false) {",
       "retention purges subjects under legal hold", "core_tests:*Retention*")
mutant("retention-ignores-recent-activity", "retention", "src/records/records_tables.cpp",
       "if (r.integer(2) >= cutoff_us || !copy_id(r.blob(0), s.id)) return;",
       "if (!copy_id(r.blob(0), s.id)) return;",
       "retention purges subjects with recent orders or touchpoints", "core_tests:*Retention*")

# --- audit -----------------------------------------------------------------
mutant("inclusion-proof-root-unchecked", "audit", "audit/src/merkle.cpp",
       "return sn == 0 && r == root;", "return sn == 0;",
       "any inclusion proof verifies", "audit_fmt_tests:*")
mutant("leaf-node-prefix-collide", "audit", "audit/src/merkle.cpp",
       "const std::uint8_t prefix = 0x00;", "const std::uint8_t prefix = 0x01;",
       "leaves hash like interior nodes (RFC 6962 domain separation lost)", "audit_fmt_tests:*")
mutant("checkpoint-signature-unchecked", "audit", "audit/src/checkpoint.cpp",
       "key.key.data()) != 0)", "key.key.data()) != 0 && false)",
       "a forged checkpoint signature verifies", "audit_fmt_tests:*")
mutant("entry-chain-unchecked", "audit", "audit/src/verify.cpp",
       "const bool link_ok = view.prev == (k == 0 ? Hash{} : prev_leaf);", "const bool link_ok = true;",
       "an export with entries reordered or dropped verifies", "audit_fmt_tests:*")
mutant("consistency-roots-unchecked", "audit", "audit/src/merkle.cpp",
       "if (size1 == size2) return proof.empty() && root1 == root2;", "if (size1 == size2) return proof.empty();",
       "two different logs of the same size are called consistent", "audit_fmt_tests:*")

# --- added after the first catalogue (appended: numbers stay stable) ---------
mutant("no-two-working-days-minimum", "dsr", "src/util/calendar.cpp",
       "while (working < 2)", "while (false)",
       "an EU period of two days or more may hold a single working day (Reg. 1182/71 Art. 3(5))",
       "regulations_tests:Regulations.*")
mutant("block-row-any-block", "audit", "src/audit/block_codec.cpp",
       "if (stored_block != block_)", "if (stored_block != block_ && false)",
       "a block row stored under another block's number serves its entries under the wrong sequence numbers",
       "core_tests:AuditBlocks.*")
mutant("block-row-time-second-kept", "audit", "src/audit/block_codec.cpp",
       "if (!have_formatted_ || second != formatted_second_)", "if (!have_formatted_)",
       "an entry read from a block row gets an earlier entry's date and second (its leaf no longer matches)",
       "core_tests:AuditBlocks.*")


# --- added after the catalogue was first run (numbered on, so earlier numbers stay) --
mutant("marketing-sees-every-channel", "access", "src/service/service_consent.cpp",
       "if (f == nullptr || f->channels.empty()) return false;", "return false;",
       "consent to e-mail shows marketing the phone number and the address too",
       "core_tests:Clocked.MarketingSeesOnly*")
mutant("erasure-keeps-caller-proofs", "consent", "src/service/service.cpp",
       "consent::Ledger::erase_caller_proofs(tx, id);", "(void)id;",
       "an erased subject's consent proofs keep what the caller wrote there (an address, what the subject typed)",
       "core_tests:ErasureShreds.TheCallersProof*")
mutant("staff-grant-lifts-objection", "consent", "src/consent/consent.cpp",
       "in.by_the_subject && e.event", "e.event",
       "a grant recorded by staff or an import ends the subject's objection to direct marketing",
       "privacy_tests:PrivacyLink.TheSubjectsOwnGrantOnThePageEndsTheirObjection")
mutant("worker-drops-unsent-rest", "http", "src/http/connection_session.h",
       "if (ec != net::error::would_block)", "if (ec != net::error::would_block || (ec = {}, true))",
       "what the socket did not take of a whole response is dropped and the next request read",
       "http_edge_tests:HttpEdge.WholeResponsesLargerThanTheSocketBuffersReachASlowReaderIntact")

def render(root, m, number):
    path = root / m["path"]
    lines = path.read_text().splitlines(keepends=True)
    seen = 0
    for i, line in enumerate(lines):
        if m["find"] in line:
            seen += 1
            if seen == m["nth"]:
                new = list(lines)
                new[i] = line.replace(m["find"], m["replace"], 1)
                diff = difflib.unified_diff(lines, new, "a/" + m["path"], "b/" + m["path"], n=3)
                header = (f"# mutant: {m['name']}\n# module: {m['module']}\n# breaks: {m['breaks']}\n"
                          f"# hint: {m['hint']}\n")
                return header + "".join(diff)
    raise LookupError(f"{m['name']}: fragment not found (occurrence {m['nth']}) in {m['path']}")


def main():
    root = pathlib.Path(__file__).resolve().parents[2]
    out = pathlib.Path(__file__).resolve().parent
    for old in out.glob("*.patch"):
        old.unlink()
    missing = 0
    for n, m in enumerate(M, 1):
        try:
            text = render(root, m, n)
        except LookupError as e:
            print(e, file=sys.stderr)
            missing += 1
            continue
        (out / f"{n:02d}-{m['name']}.patch").write_text(text)
    print(f"catalogue: {len(M) - missing} patches written, {missing} fragments not found", file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
