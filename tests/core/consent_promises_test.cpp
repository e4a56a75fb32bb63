// Issue 15, findings 1 and 2: consent capture is separated from consent use,
// and a withdrawal wins. Every test goes through the Service façade on a real
// vault, as a caller would.
#include <gtest/gtest.h>

#include <atomic>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <sstream>

#include "custos/audit/audit_log.h"
#include "custos/error.h"
#include "test_support.h"

namespace custos {
namespace {

using service::Json;
using testing::code_of;
using testing::TestVault;

constexpr std::int64_t kSecond = 1000000;

Json grant(const std::string& purpose, const std::string& channel, const std::string& source = "web_form") {
  return {{"purpose", purpose}, {"channel", channel}, {"event", "granted"}, {"source", source}};
}
Json withdraw(const std::string& purpose, const std::string& channel) {
  return {{"purpose", purpose}, {"channel", channel}, {"event", "withdrawn"}, {"source", "email_link"}};
}

std::string create(TestVault& v, const std::string& email) {
  return v.service->create_subject(v.admin(), {{"fields", {{"given_name", "Ada"}, {"email", email}}}})["id"];
}

std::string state_of(TestVault& v, const std::string& id, const std::string& purpose, const std::string& channel) {
  const Json c = v.service->get_consents(v.admin(), id);
  for (const auto& s : c["current"])
    if (s["purpose"] == purpose && s["channel"] == channel) return s["state"];
  return "none";
}

int denials(TestVault& v, const std::string& id, const std::string& operation) {
  const Json entries = v.service->audit_entries(v.caller("auditor", "audit"), {{"subject", id}});
  int n = 0;
  for (const auto& e : entries["entries"])
    if (e["outcome"] == "denied" && e["operation"] == operation) ++n;
  return n;
}

// ---- Finding 1: the role that uses a consent can create it --------------------

TEST(ConsentCapture, MarketingCannotGrantThePurposeItUses) {
  TestVault v;
  const std::string id = create(v, "ada@example.com");
  const auto mkt = v.caller("marketing", "email_marketing");
  EXPECT_EQ(code_of([&] { v.service->get_subject(mkt, id); }), ErrorCode::consent_missing);
  EXPECT_EQ(code_of([&] { v.service->record_consent(mkt, id, grant("email_marketing", "email"), false); }),
            ErrorCode::consent_capture_not_allowed);
  // Nothing half-applied: no event, no state, the read is still refused.
  EXPECT_EQ(code_of([&] { v.service->get_subject(mkt, id); }), ErrorCode::consent_missing);
  EXPECT_TRUE(v.service->get_consents(v.admin(), id)["history"].empty());
  EXPECT_EQ(denials(v, id, "consent.record"), 1);
  // Not through another basis either.
  Json li = grant("email_marketing", "email", "import");
  li["lawful_basis"] = "legitimate_interests";
  EXPECT_EQ(code_of([&] { v.service->record_consent(mkt, id, li, false); }), ErrorCode::consent_capture_not_allowed);
  EXPECT_EQ(code_of([&] { v.service->record_consent(v.caller("marketing", ""), id, grant("sms_marketing", "sms"), false); }),
            ErrorCode::consent_capture_not_allowed);
}

TEST(ConsentCapture, ServiceRoleCannotGrantSaleOrShare) {
  TestVault v;
  const std::string id = create(v, "bo@example.com");
  EXPECT_EQ(code_of([&] {
              v.service->record_consent(v.caller("service", "customer_service"), id,
                                        grant("partner_sharing", "email", "call_centre"), false);
            }),
            ErrorCode::consent_capture_not_allowed);
  EXPECT_EQ(state_of(v, id, "partner_sharing", "email"), "none");
  EXPECT_EQ(code_of([&] {
              v.service->record_consent(v.caller("sales", "sales"), id, grant("email_marketing", "email"), false);
            }),
            ErrorCode::consent_capture_not_allowed);
}

TEST(ConsentCapture, WithdrawingIsAsEasyAsGiving) {
  TestVault v;
  const std::string id = create(v, "cy@example.com");
  v.service->record_consent(v.admin(), id, grant("email_marketing", "email", "import"), false);
  v.service->record_consent(v.admin(), id, grant("partner_sharing", "email", "import"), false);
  // Any role with the consent operation records withdrawals, denials, objections.
  v.service->record_consent(v.caller("marketing", "email_marketing"), id, withdraw("email_marketing", "email"), false);
  EXPECT_EQ(state_of(v, id, "email_marketing", "email"), "withdrawn");
  Json denied = withdraw("partner_sharing", "email");
  denied["event"] = "denied";
  v.service->record_consent(v.caller("service", "customer_service"), id, denied, false);
  EXPECT_EQ(state_of(v, id, "partner_sharing", "email"), "denied");
  v.service->record_consent(v.caller("sales", ""), id, {{"event", "objection"}, {"source", "call_centre"}}, false);
  EXPECT_TRUE(v.service->get_consents(v.admin(), id)["objected"].get<bool>());
}

TEST(ConsentCapture, DoubleOptInIsEvidenceOnlyWhenSomeoneElseConfirms) {
  TestVault v;
  const std::string id = create(v, "di@example.com");
  const auto mkt = v.caller("marketing", "email_marketing");
  // Marketing may start a double opt-in: it stays pending.
  Json body = grant("email_marketing", "email");
  body["double_opt_in"] = true;
  const Json r = v.service->record_consent(mkt, id, body, false);
  ASSERT_TRUE(r.contains("confirmation")) << r;
  const std::string token = r["confirmation"]["token"];
  EXPECT_EQ(state_of(v, id, "email_marketing", "email"), "none");
  // ...but cannot confirm its own token: the confirmation is the capture.
  EXPECT_EQ(code_of([&] { v.service->confirm_consent(mkt, {{"token", token}}); }),
            ErrorCode::consent_capture_not_allowed);
  EXPECT_EQ(state_of(v, id, "email_marketing", "email"), "none");
  EXPECT_EQ(code_of([&] { v.service->get_subject(mkt, id); }), ErrorCode::consent_missing);
  // The preference page (a capturing role) relays the subject's click.
  const Json c = v.service->confirm_consent(v.admin(), {{"token", token}});
  EXPECT_EQ(c["event"]["proof"]["capture"], "double_opt_in") << c;
  EXPECT_EQ(state_of(v, id, "email_marketing", "email"), "granted");
  EXPECT_EQ(v.service->get_subject(mkt, id)["fields"]["email"], "di@example.com");
}

TEST(ConsentCapture, EveryGrantRecordsHowItWasCaptured) {
  TestVault v;
  const std::string id = create(v, "ev@example.com");
  const Json r = v.service->record_consent(v.admin(), id, grant("email_marketing", "email", "import"), false);
  const Json& proof = r["events"][0]["proof"];
  EXPECT_EQ(proof["capture"], "capture_consent") << r;
  EXPECT_EQ(proof["captured_by_role"], "admin") << r;
  EXPECT_EQ(r["events"][0]["source"], "import");
}

TEST(ConsentCapture, PolicyMayNotLetARoleCaptureWhatItDeclares) {
  TestVault v;
  const auto roles_file = v.data_dir() / "policies" / "roles.yaml";
  std::stringstream text;
  text << std::ifstream(roles_file).rdbuf();
  std::string yaml = text.str();
  const std::string anchor = "  marketing:\n";
  const auto at = yaml.find(anchor);
  ASSERT_NE(at, std::string::npos);
  yaml.insert(at + anchor.size(), "    capture_consent: [email_marketing]\n");
  std::ofstream(roles_file) << yaml;
  std::string error;
  EXPECT_FALSE(v.service->reload_policies(&error));
  EXPECT_NE(error.find("capture_consent"), std::string::npos) << error;
}

// ---- Finding 2: a withdrawal can be undone or ignored ------------------------

struct Clocked {
  TestVault v;
  std::shared_ptr<std::atomic<std::int64_t>> now = std::make_shared<std::atomic<std::int64_t>>(1767225600LL * kSecond);
  Clocked() {
    auto n = now;
    v.use_clock([n] { return n->load(); });
  }
  void advance(std::int64_t us) { *now += us; }
  std::string at(std::int64_t offset_us) const { return audit::format_time_us(now->load() + offset_us); }
};

TEST(ConsentWithdrawal, DoubleOptInConfirmedAfterWithdrawalIsVoid) {
  Clocked t;
  TestVault& v = t.v;
  const std::string id = create(v, "wd@example.com");
  Json body = grant("sms_marketing", "sms");
  body["double_opt_in"] = true;
  const std::string token = v.service->record_consent(v.admin(), id, body, false)["confirmation"]["token"];
  t.advance(kSecond);
  v.service->record_consent(v.caller("marketing", ""), id, withdraw("sms_marketing", "sms"), false);
  t.advance(kSecond);
  EXPECT_EQ(code_of([&] { v.service->confirm_consent(v.admin(), {{"token", token}}); }), ErrorCode::conflict);
  EXPECT_EQ(state_of(v, id, "sms_marketing", "sms"), "withdrawn");
  EXPECT_FALSE(campaign_ids(v, "sms_marketing", "sms").count(id));
  // The voided pending grant shows as such in the history.
  const Json h = v.service->get_consents(v.admin(), id)["history"];
  EXPECT_EQ(h[0]["status"], "voided") << h;
}

TEST(ConsentWithdrawal, ALaterPendingGrantVoidsTheEarlierToken) {
  Clocked t;
  TestVault& v = t.v;
  const std::string id = create(v, "tk@example.com");
  Json body = grant("email_marketing", "email");
  body["double_opt_in"] = true;
  const std::string first = v.service->record_consent(v.admin(), id, body, false)["confirmation"]["token"];
  t.advance(kSecond);
  const std::string second = v.service->record_consent(v.admin(), id, body, false)["confirmation"]["token"];
  EXPECT_EQ(code_of([&] { v.service->confirm_consent(v.admin(), {{"token", first}}); }), ErrorCode::conflict);
  v.service->confirm_consent(v.admin(), {{"token", second}});
  EXPECT_EQ(state_of(v, id, "email_marketing", "email"), "granted");
}

// A refused token says why: the officer who retries a confirmation must
// learn that it already counted, not that the subject withdrew since.
TEST(ConsentWithdrawal, AReusedTokenIsRefusedAsAlreadyUsed) {
  Clocked t;
  TestVault& v = t.v;
  const std::string id = create(v, "re@example.com");
  Json body = grant("email_marketing", "email");
  body["double_opt_in"] = true;
  const std::string token = v.service->record_consent(v.admin(), id, body, false)["confirmation"]["token"];
  t.advance(kSecond);
  v.service->confirm_consent(v.admin(), {{"token", token}});
  t.advance(kSecond);
  try {
    v.service->confirm_consent(v.admin(), {{"token", token}});
    ADD_FAILURE() << "a used token confirmed again";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::conflict);
    EXPECT_NE(std::string(e.what()).find("already used"), std::string::npos) << e.what();
  }
  EXPECT_EQ(state_of(v, id, "email_marketing", "email"), "granted");
  EXPECT_EQ(v.service->get_consents(v.admin(), id)["history"].size(), 2u) << "one grant, one confirmation";
}

TEST(ConsentWithdrawal, GrantsMayNotBeDatedInTheFuture) {
  Clocked t;
  TestVault& v = t.v;
  const std::string id = create(v, "fu@example.com");
  for (const std::int64_t ahead : {1 * kSecond, 4 * 60 * kSecond, 3600 * kSecond}) {
    Json body = grant("email_marketing", "email");
    body["at"] = t.at(ahead);
    EXPECT_EQ(code_of([&] { v.service->record_consent(v.admin(), id, body, false); }), ErrorCode::invalid_field)
        << ahead;
  }
  EXPECT_TRUE(v.service->get_consents(v.admin(), id)["history"].empty());
  // Now and the past are fine.
  Json body = grant("email_marketing", "email");
  body["at"] = t.at(-60 * kSecond);
  v.service->record_consent(v.admin(), id, body, false);
  EXPECT_EQ(state_of(v, id, "email_marketing", "email"), "granted");
}

TEST(ConsentWithdrawal, AWithdrawalRecordedAfterAGrantIsNeverHiddenByItsTime) {
  Clocked t;
  TestVault& v = t.v;
  const std::string id = create(v, "or@example.com");
  v.service->record_consent(v.admin(), id, grant("email_marketing", "email"), false);
  t.advance(kSecond);
  // The unsubscribe link's client clock runs 30 s slow: its `at` is before the grant's.
  Json w = withdraw("email_marketing", "email");
  w["at"] = t.at(-30 * kSecond);
  v.service->record_consent(v.caller("marketing", ""), id, w, false);
  EXPECT_EQ(state_of(v, id, "email_marketing", "email"), "withdrawn");
  EXPECT_FALSE(campaign_ids(v, "email_marketing", "email").count(id));
  // A stale grant (dated before that withdrawal) recorded later does not undo it.
  t.advance(kSecond);
  Json stale = grant("email_marketing", "email", "import");
  stale["at"] = t.at(-3600 * kSecond);
  v.service->record_consent(v.admin(), id, stale, false);
  EXPECT_EQ(state_of(v, id, "email_marketing", "email"), "withdrawn");
  EXPECT_FALSE(campaign_ids(v, "email_marketing", "email").count(id));
  // A fresh grant does.
  t.advance(kSecond);
  v.service->record_consent(v.admin(), id, grant("email_marketing", "email"), false);
  EXPECT_TRUE(campaign_ids(v, "email_marketing", "email").count(id));
}

// A hostile review (2026-12-03): any consent role could backdate a
// withdrawal to 2000, moving the state's `since` back, so that a stale grant
// (dated after 2000 but before the subject's real withdrawal) undid the real
// withdrawal. `since` never moves back; the stale grant stays ignored.
TEST(ConsentWithdrawal, ABackdatedWithdrawalCannotReopenTheDoorToAStaleGrant) {
  Clocked t;
  TestVault& v = t.v;
  const std::string id = create(v, "bd@example.com");
  v.service->record_consent(v.admin(), id, grant("email_marketing", "email"), false);
  t.advance(24 * 3600 * kSecond);
  v.service->record_consent(v.caller("sales", ""), id, withdraw("email_marketing", "email"), false);  // the subject's
  t.advance(kSecond);
  Json backdated = withdraw("email_marketing", "email");
  backdated["at"] = "2000-01-01T00:00:00Z";
  v.service->record_consent(v.caller("marketing", ""), id, backdated, false);
  EXPECT_EQ(state_of(v, id, "email_marketing", "email"), "withdrawn");
  t.advance(kSecond);
  Json stale = grant("email_marketing", "email", "import");  // dated between the grant and the real withdrawal
  stale["at"] = t.at(-12 * 3600 * kSecond);
  v.service->record_consent(v.admin(), id, stale, false);
  EXPECT_EQ(state_of(v, id, "email_marketing", "email"), "withdrawn");
  EXPECT_FALSE(campaign_ids(v, "email_marketing", "email").count(id));
  const Json consents = v.service->get_consents(v.admin(), id);  // not a temporary the loop outlives
  for (const auto& c : consents["current"]) {
    if (c["purpose"] == "email_marketing") {
      EXPECT_GT(c["since"].get<std::string>(), std::string("2001")) << c.dump();
    }
  }
}

// The property: a random interleaving of grants, withdrawals, double
// opt-in confirmations and campaign fetches never returns a subject whose latest
// recorded event is a withdrawal.
void interleave(unsigned seed, int steps) {
  Clocked t;
  TestVault& v = t.v;
  std::mt19937 rng(seed);
  auto pick = [&](int n) { return static_cast<int>(rng() % static_cast<unsigned>(n)); };
  std::vector<std::string> ids;
  for (int i = 0; i < 4; ++i) ids.push_back(create(v, "p" + std::to_string(i) + "@example.com"));
  std::vector<std::string> tokens;
  int fetches = 0, returned = 0;
  for (int step = 0; step < steps; ++step) {
    t.advance(1 + pick(3 * kSecond));
    const std::string& id = ids[static_cast<std::size_t>(pick(static_cast<int>(ids.size())))];
    // Client clocks: up to 10 min slow, or up to 5 min fast.
    const std::int64_t skew = pick(4) == 0 ? 0 : static_cast<std::int64_t>(pick(900)) * kSecond - 600 * kSecond;
    try {
      switch (pick(6)) {
        case 0: {  // a direct grant by a capturing role
          Json b = grant("email_marketing", "email", "import");
          b["at"] = t.at(skew);
          v.service->record_consent(v.admin(), id, b, false);
          break;
        }
        case 1: {  // a double opt-in started by marketing
          Json b = grant("email_marketing", "email");
          b["double_opt_in"] = true;
          tokens.push_back(v.service->record_consent(v.caller("marketing", ""), id, b, false)["confirmation"]["token"]);
          break;
        }
        case 2: {  // a confirmation of any token so far (old, used or voided ones too)
          if (tokens.empty()) break;
          const std::string tok = tokens[static_cast<std::size_t>(pick(static_cast<int>(tokens.size())))];
          v.service->confirm_consent(v.admin(), {{"token", tok}});
          break;
        }
        case 3:
        case 4: {  // a withdrawal, by whoever
          Json b = withdraw("email_marketing", "email");
          b["at"] = t.at(skew);
          v.service->record_consent(pick(2) ? v.caller("marketing", "") : v.admin(), id, b, false);
          break;
        }
        default: {
          ++fetches;
          for (const auto& got : campaign_ids(v, "email_marketing", "email")) {
            ++returned;
            const Json h = v.service->get_consents(v.admin(), got)["history"];
            std::string latest;
            for (const auto& e : h)
              if (e["status"] == "confirmed" && e["purpose"] == "email_marketing" && e["channel"] == "email")
                latest = e["event"];
            ASSERT_EQ(latest, "granted") << "seed " << seed << " step " << step << " subject " << got << "\n"
                                         << h.dump(1);
          }
        }
      }
    } catch (const Error& e) {
      // Refusals (future grants, used or voided tokens) are part of the game.
      ASSERT_TRUE(e.code() == ErrorCode::invalid_field || e.code() == ErrorCode::conflict ||
                  e.code() == ErrorCode::invalid_argument)
          << "seed " << seed << " step " << step << ": " << e.what();
    }
  }
  EXPECT_GT(fetches, 0);
  EXPECT_GT(returned, 0) << "seed " << seed << ": the property was never exercised";
}

TEST(ConsentWithdrawal, PropertyWithdrawalAlwaysWins) {
  interleave(20240515u, 200);
  for (unsigned seed : {1u, 2u, 3u}) interleave(seed, 120);
}

}  // namespace
}  // namespace custos
