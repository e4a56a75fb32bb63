// Behaviours a planted bug once slipped past (issue 20's mutation check): each
// test states the promise and fails when the code that keeps it is removed.
// Through the Service façade on a real vault; the raw rows are read from the
// same SQLCipher file only where the promise is about what is stored.
#include <gtest/gtest.h>

#include <cctype>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>

#include "custos/crypto/aead.h"
#include "custos/crypto/blind_index.h"
#include "custos/crypto/keyring.h"
#include "custos/crypto/secret_key.h"
#include "custos/records/records.h"
#include "custos/error.h"
#include "custos/store/key_table.h"
#include "custos/store/sqlcipher_store.h"
#include "test_support.h"

namespace custos {
namespace {

using service::Json;
using testing::code_of;
using testing::TestVault;

constexpr std::int64_t kHour = 3600LL * 1000000;

// The vault's store opened beside the running service (a second connection
// sees every commit), for promises about what is stored.
std::unique_ptr<store::Store> raw_store(const TestVault& v) {
  const auto keyring = crypto::Keyring::open(v.data_dir() / "keys", std::nullopt);
  return testing::open_vault_store(v.data_dir(), *keyring);
}

Json grant(const std::string& purpose, const std::string& channel) {
  return {{"purpose", purpose}, {"channel", channel}, {"event", "granted"}, {"source", "web_form"}};
}

std::string state_of(TestVault& v, const std::string& id, const std::string& purpose, const std::string& channel) {
  // Kept in a variable: a range-for over a temporary's member dangles.
  const Json all = v.service->get_consents(v.admin(), id);
  for (const auto& s : all["current"])
    if (s["purpose"] == purpose && s["channel"] == channel) return s["state"];
  return "none";
}

std::vector<Json> campaign(TestVault& v, const std::string& purpose, const std::string& channel,
                           const Json& fields = Json::array({"email"})) {
  std::vector<Json> lines;
  v.service->campaign_fetch(v.caller("marketing", purpose),
                            {{"purpose", purpose}, {"channel", channel}, {"fields", fields}},
                            [&](const std::string& line) {
                              const Json j = Json::parse(line);
                              if (j.contains("id")) lines.push_back(j);
                              return true;
                            });
  return lines;
}

std::set<std::string> ids_of(const std::vector<Json>& lines) {
  std::set<std::string> out;
  for (const auto& l : lines) out.insert(l["id"].get<std::string>());
  return out;
}

// A vault whose clock the test moves.
struct Clocked : ::testing::Test {
  TestVault v;
  std::int64_t now = 1780000000LL * 1000000;  // 2026-05-28
  void SetUp() override {
    v.use_clock([this] { return now; });
  }
  std::string subject(const std::string& email) {
    return v.service->create_subject(v.admin(), {{"fields", {{"given_name", "Ada"}, {"email", email}}}})["id"];
  }
};

// ------------------------------------------------------------------ erasure

TEST(ErasureShreds, TheWrappedKeyAndTheFieldBlobLeaveTheRowAndTheFile) {
  TestVault v;
  const std::string id =
      v.service->create_subject(v.admin(), {{"fields", {{"given_name", "Ada"}, {"email", "shred@example.com"}}}})["id"];
  v.service->add_touchpoint(v.admin("customer_service"), id,
                            {{"channel", "phone"}, {"type", "call"}, {"notes", "asked about the blue coat"}});
  const records::SubjectId sid = records::parse_subject_id(id);
  auto db = raw_store(v);
  std::vector<std::uint8_t> wrapped, blob;
  {
    auto tx = db->begin(store::TxMode::read);
    tx->exec("SELECT wrapped_dek, fields FROM subjects WHERE id = ?", {sid}, [&](const store::Row& r) {
      wrapped = r.blob_copy(0);
      blob = r.blob_copy(1);
    });
  }
  ASSERT_FALSE(wrapped.empty());
  ASSERT_FALSE(blob.empty());

  v.service->erase_subject(v.admin(), id, "test: right to erasure");

  auto tx = db->begin(store::TxMode::read);
  int rows = 0;
  tx->exec("SELECT status, wrapped_dek IS NULL, fields IS NULL FROM subjects WHERE id = ?", {sid},
           [&](const store::Row& r) {
             ++rows;
             EXPECT_EQ(r.text(0), "erased");
             EXPECT_EQ(r.integer(1), 1) << "the wrapped data key survived the erasure";
             EXPECT_EQ(r.integer(2), 1) << "the sealed field blob survived the erasure";
           });
  EXPECT_EQ(rows, 1);
  // The notes were sealed under that key: with it gone no row may still
  // carry a copy, and neither may the database file or its log.
  EXPECT_EQ(tx->scalar("SELECT count(*) FROM subjects WHERE wrapped_dek = ?", {wrapped}).value_or(-1), 0);
  tx.reset();
  db.reset();
  v.service.reset();  // closes and checkpoints
  const std::string wrapped_bytes(wrapped.begin(), wrapped.end());
  EXPECT_TRUE(testing::files_containing(v.data_dir(), wrapped_bytes).empty());
  EXPECT_TRUE(testing::files_containing(v.data_dir(), "shred@example.com").empty());
}

// A touchpoint's `type` is the caller's free text (up to 64 characters):
// a CRM may well write "call with Jane Roe about her divorce" there. Its
// notes are sealed under the subject's key and go with it; the type must
// too, or an erased subject's touchpoints keep words about them in the clear.
// Channel and time stay (recency analytics need no identity).
TEST(ErasureShreds, TouchpointTypesGoWithTheSubject) {
  TestVault v;
  const std::string id =
      v.service->create_subject(v.admin(), {{"fields", {{"given_name", "Jane"}, {"email", "roe@example.com"}}}})["id"];
  v.service->add_touchpoint(v.admin("customer_service"), id,
                            {{"channel", "phone"}, {"type", "call with Jane Roe about her divorce"}});
  v.service->add_touchpoint(v.admin("customer_service"), id, {{"channel", "email"}, {"type", "newsletter_open"}});
  const std::string other =
      v.service->create_subject(v.admin(), {{"fields", {{"given_name", "Kay"}, {"email", "kay@example.com"}}}})["id"];
  v.service->add_touchpoint(v.admin("customer_service"), other, {{"channel", "web"}, {"type", "visit by Kay"}});
  const Json report = v.service->erase_subject(v.admin(), id, "test: right to erasure");
  EXPECT_EQ(report["touchpoint_types"], "erased (free text about the subject)") << report.dump();
  auto db = raw_store(v);
  auto tx = db->begin(store::TxMode::read);
  std::vector<std::string> kept;
  tx->exec("SELECT channel, type FROM touchpoints WHERE subject_id = ? ORDER BY channel",
           {records::parse_subject_id(id)},
           [&](const store::Row& r) { kept.push_back(std::string(r.text(0)) + "/" + std::string(r.text(1))); });
  EXPECT_EQ(kept, (std::vector<std::string>{"email/erased", "phone/erased"}));
  // Nobody else's.
  EXPECT_EQ(tx->scalar("SELECT count(*) FROM touchpoints WHERE type = 'visit by Kay'").value_or(0), 1);
}

// A consent's `proof` is the caller's to fill (a form id, the address the
// form was sent from, what the subject typed): the erasure report promises
// that the consent history it keeps holds no personal values, so what a
// caller put there goes with the subject. The vault's own evidence of how
// each event was captured stays: it is what the history is kept to prove.
TEST(ErasureShreds, TheCallersProofDetailsGoWithTheSubjectAndTheVaultsEvidenceStays) {
  TestVault v;
  const Json fields = {{"given_name", "Ada"}, {"email", "proofs@example.com"}};
  const std::string id = v.service->create_subject(v.admin(), {{"fields", fields}})["id"];
  Json g = grant("email_marketing", "email");
  g["proof"] = {{"form", "newsletter-footer"}, {"typed_email", "proofcanary@example.com"}, {"ip", "198.51.100.77"}};
  v.service->record_consent(v.admin(), id, g, false);
  Json pending = grant("sms_marketing", "sms");
  pending["double_opt_in"] = true;
  pending["proof"] = {{"Proofcanary Person said yes on the phone", true}};
  const std::string token =
      v.service->record_consent(v.caller("marketing", "sms_marketing"), id, pending, false)["confirmation"]["token"];
  v.service->confirm_consent(v.admin(), {{"token", token}});
  Json w = {{"purpose", "email_marketing"}, {"channel", "email"}, {"event", "withdrawn"}, {"source", "email_link"},
            {"proof", {{"reason", "Proofcanary moved house"}, {"request_id", "proofcanary-in-a-vault-key"}}}};
  v.service->record_consent(v.admin(), id, w, /*gpc=*/true);

  const auto proofs = [&] {
    auto db = raw_store(v);
    auto tx = db->begin(store::TxMode::read);
    std::vector<Json> out;
    tx->exec("SELECT proof FROM consent_events WHERE subject_id = ? ORDER BY id", {records::parse_subject_id(id)},
             [&](const store::Row& r) { out.push_back(Json::parse(std::string(r.text(0)))); });
    return out;
  };
  const auto mentions_canary = [](const std::vector<Json>& all) {
    for (const auto& p : all) {
      std::string text = p.dump();
      for (auto& ch : text) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
      if (text.find("proofcanary") != std::string::npos || text.find("198.51.100.77") != std::string::npos)
        return true;
    }
    return false;
  };
  const auto before = proofs();
  ASSERT_GE(before.size(), 5u);  // grant, pending, confirmation, withdrawal, the GPC opt-outs
  ASSERT_TRUE(mentions_canary(before)) << "the test would prove nothing";

  v.service->erase_subject(v.admin(), id, "test: right to erasure");

  const auto after = proofs();
  ASSERT_EQ(after.size(), before.size()) << "the consent history itself is kept";
  EXPECT_FALSE(mentions_canary(after));
  int captured = 0, confirmations = 0, signals = 0;
  for (const auto& p : after) {
    if (p.value("captured_by_role", "") == "admin" && p.value("capture", "") == "capture_consent") ++captured;
    if (p.value("capture", "") == "double_opt_in" && p.contains("confirms_event")) ++confirmations;
    if (p.value("signal", "") == "Sec-GPC: 1" && p.contains("received_at") && p.contains("request_id")) ++signals;
    EXPECT_FALSE(p.contains("form")) << p;
  }
  EXPECT_EQ(captured, 1) << "the grant's capture evidence was lost";
  EXPECT_EQ(confirmations, 1) << "the double opt-in's confirmation evidence was lost";
  EXPECT_GE(signals, 1) << "the GPC signal's evidence was lost";
}

// ------------------------------------------------------------------ consent

TEST_F(Clocked, AnExpiredGrantNoLongerCountsAnywhere) {
  const std::string id = subject("expiry@example.com");
  Json g = grant("email_marketing", "email");
  g["expires_at"] = "2026-05-28T22:00:00Z";  // about 9 hours on
  v.service->record_consent(v.admin(), id, g, false);
  const auto mkt = v.caller("marketing", "email_marketing");
  EXPECT_EQ(state_of(v, id, "email_marketing", "email"), "granted");
  EXPECT_EQ(ids_of(campaign(v, "email_marketing", "email")), std::set<std::string>{id});
  EXPECT_EQ(v.service->get_subject(mkt, id)["fields"]["email"], "expiry@example.com");

  now += 24 * kHour;
  EXPECT_EQ(state_of(v, id, "email_marketing", "email"), "expired");
  EXPECT_TRUE(campaign(v, "email_marketing", "email").empty());
  EXPECT_EQ(code_of([&] { v.service->get_subject(mkt, id); }), ErrorCode::consent_missing);
}

TEST_F(Clocked, ADenialIsNotConsent) {
  const std::string id = subject("denied@example.com");
  v.service->record_consent(v.admin(), id,
                            {{"purpose", "email_marketing"}, {"channel", "email"}, {"event", "denied"},
                             {"source", "web_form"}},
                            false);
  EXPECT_EQ(state_of(v, id, "email_marketing", "email"), "denied");
  EXPECT_TRUE(campaign(v, "email_marketing", "email").empty());
  EXPECT_EQ(code_of([&] { v.service->get_subject(v.caller("marketing", "email_marketing"), id); }),
            ErrorCode::consent_missing);
}

TEST_F(Clocked, GlobalPrivacyControlOptsOutOfSaleAndShare) {
  const std::string id = subject("gpc@example.com");
  v.service->record_consent(v.admin(), id, grant("partner_sharing", "email"), false);
  v.service->record_consent(v.admin(), id, grant("targeted_advertising", "web"), false);
  ASSERT_EQ(state_of(v, id, "partner_sharing", "email"), "granted");
  // Any consent call carrying Sec-GPC: 1 (here an unrelated denial).
  now += kHour;
  v.service->record_consent(v.admin(), id,
                            {{"purpose", "email_marketing"}, {"channel", "email"}, {"event", "denied"},
                             {"source", "web_form"}},
                            true);
  EXPECT_EQ(state_of(v, id, "partner_sharing", "email"), "withdrawn");
  EXPECT_EQ(state_of(v, id, "targeted_advertising", "web"), "withdrawn");
  EXPECT_EQ(code_of([&] { v.service->get_subject(v.caller("marketing", "partner_sharing"), id); }),
            ErrorCode::consent_missing);
}

TEST_F(Clocked, DoubleOptInTokensExpireAndConfirmOnce) {
  const std::string id = subject("doi@example.com");
  Json body = grant("email_marketing", "email");
  body["double_opt_in"] = true;
  const auto mkt = v.caller("marketing", "email_marketing");
  const std::string stale = v.service->record_consent(mkt, id, body, false)["confirmation"]["token"];
  EXPECT_EQ(state_of(v, id, "email_marketing", "email"), "none") << "pending counts as nothing";
  now += 400 * 24 * kHour;  // far past any confirmation window
  EXPECT_NE(code_of([&] { v.service->confirm_consent(v.admin(), {{"token", stale}}); }), ErrorCode::internal);
  EXPECT_EQ(state_of(v, id, "email_marketing", "email"), "none");

  const std::string fresh = v.service->record_consent(mkt, id, body, false)["confirmation"]["token"];
  v.service->confirm_consent(v.admin(), {{"token", fresh}});
  EXPECT_EQ(state_of(v, id, "email_marketing", "email"), "granted");
  v.service->record_consent(mkt, id, {{"purpose", "email_marketing"}, {"channel", "email"}, {"event", "withdrawn"},
                                      {"source", "email_link"}},
                            false);
  // The used token cannot grant again after the withdrawal.
  EXPECT_EQ(code_of([&] { v.service->confirm_consent(v.admin(), {{"token", fresh}}); }), ErrorCode::conflict);
  EXPECT_EQ(state_of(v, id, "email_marketing", "email"), "withdrawn");
}

// ------------------------------------------------------------------ masking

// Every path that hands a field to marketing (which sees descriptive data
// masked) masks it the same way: read, batch read, lookup and campaign fetch.
TEST_F(Clocked, MaskedFieldsAreMaskedOnEveryOutputPath) {
  const std::string id = v.service->create_subject(
      v.admin(), {{"fields", {{"given_name", "Ada"}, {"email", "mask@example.com"}, {"birth_date", "1990-04-12"}}}})["id"];
  v.service->record_consent(v.admin(), id, grant("email_marketing", "email"), false);
  const auto mkt = v.caller("marketing", "email_marketing");
  EXPECT_EQ(v.service->get_subject(mkt, id)["fields"]["birth_date"], "1990");
  const Json batch = v.service->batch_get(mkt, {{"ids", {id}}});
  ASSERT_EQ(batch["results"].size(), 1u) << batch;
  EXPECT_EQ(batch["results"][0]["subject"]["fields"]["birth_date"], "1990") << batch;
  const Json found = v.service->find_subjects(mkt, "email", "mask@example.com");
  ASSERT_EQ(found["subjects"].size(), 1u) << found;
  EXPECT_EQ(found["subjects"][0]["fields"]["birth_date"], "1990") << found;
  const auto lines = campaign(v, "email_marketing", "email", Json::array({"email", "birth_date"}));
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0]["fields"]["birth_date"], "1990") << lines[0];
  EXPECT_EQ(lines[0]["fields"]["email"], "mask@example.com");
}

// A hostile review (2026-12-03): a subject's consent to e-mail handed
// marketing the phone number and the postal address too (visibility went by
// role and category only). Under a marketing purpose a field bound to
// channels (schema.yaml `channels`) is shown only for a channel the subject's
// consent to that purpose covers, on every output path, and the audit names
// only what was shown.
TEST_F(Clocked, MarketingSeesOnlyTheContactFieldsOfTheChannelsConsentedTo) {
  const std::string id = v.service->create_subject(
      v.admin(), {{"fields", {{"given_name", "Ada"}, {"email", "chan@example.com"}, {"phone", "+442079460123"},
                              {"postal_address", "1 Main Street, Leeds"}}}})["id"];
  v.service->record_consent(v.admin(), id, grant("email_marketing", "email"), false);
  v.service->record_consent(v.admin(), id, grant("partner_sharing", "post"), false);
  const auto keys = [](const Json& fields) {
    std::set<std::string> out;
    for (const auto& [k, value] : fields.items()) out.insert(k);
    return out;
  };
  const std::set<std::string> by_email{"given_name", "email"};
  const auto mkt = v.caller("marketing", "email_marketing");
  EXPECT_EQ(keys(v.service->get_subject(mkt, id)["fields"]), by_email);
  const Json batch = v.service->batch_get(mkt, {{"ids", {id}}});
  ASSERT_EQ(batch["results"].size(), 1u) << batch;
  EXPECT_EQ(keys(batch["results"][0]["subject"]["fields"]), by_email) << batch;
  const Json found = v.service->find_subjects(mkt, "email", "chan@example.com");
  ASSERT_EQ(found["subjects"].size(), 1u) << found;
  EXPECT_EQ(keys(found["subjects"][0]["fields"]), by_email) << found;
  // Nor does a phone number the caller holds lead to the e-mail address.
  EXPECT_TRUE(v.service->find_subjects(mkt, "phone", "+442079460123")["subjects"].empty());

  Json summary;
  std::vector<Json> lines;
  v.service->campaign_fetch(mkt,
                            {{"purpose", "email_marketing"}, {"channel", "email"},
                             {"fields", {"email", "phone", "postal_address"}}},
                            [&](const std::string& line) {
                              const Json j = Json::parse(line);
                              if (j.contains("id")) lines.push_back(j);
                              else summary = j;
                              return true;
                            });
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(keys(lines[0]["fields"]), std::set<std::string>{"email"}) << lines[0];
  EXPECT_EQ(summary["fields_withheld"], Json::array({"phone", "postal_address"})) << summary;

  // Partner sharing, consented to by post only: the address, not the e-mail.
  const auto partner = v.caller("marketing", "partner_sharing");
  EXPECT_EQ(keys(v.service->get_subject(partner, id)["fields"]),
            (std::set<std::string>{"given_name", "postal_address"}));
  // Purposes other than marketing are as their role's visibility says.
  EXPECT_EQ(keys(v.service->get_subject(v.admin("customer_service"), id)["fields"]),
            (std::set<std::string>{"given_name", "email", "phone", "postal_address"}));

  // The audited reads name what was shown: never the phone under a marketing purpose.
  const Json entries = v.service->audit_entries(v.caller("auditor", "audit"), {{"subject", id}});
  int marketing_reads = 0;
  for (const auto& e : entries["entries"]) {
    const std::string purpose = e.value("purpose", "");
    if (purpose != "email_marketing" && purpose != "partner_sharing") continue;
    ++marketing_reads;
    for (const auto& f : e["fields"]) EXPECT_NE(f, "phone") << e;
  }
  EXPECT_GE(marketing_reads, 4) << entries;
}

// ------------------------------------------------------------------ restriction

TEST_F(Clocked, CampaignFetchSkipsRestrictedAndObjectingSubjects) {
  const std::string kept = subject("kept@example.com");
  const std::string restricted = subject("restricted@example.com");
  for (const auto& id : {kept, restricted}) v.service->record_consent(v.admin(), id, grant("email_marketing", "email"), false);
  ASSERT_EQ(ids_of(campaign(v, "email_marketing", "email")), (std::set<std::string>{kept, restricted}));
  const auto officer = v.caller("compliance_officer", "dsr_fulfilment");
  const std::string req = v.service->dsr_create(officer, {{"type", "restriction"}, {"regime", "gdpr"},
                                                          {"identifier", {{"email", "restricted@example.com"}}},
                                                          {"channel", "web_form"}})["id"];
  for (const char* to : {"identity_verified", "in_progress", "completed"})
    v.service->dsr_transition(officer, req, {{"to", to}, {"note", "step"}});
  EXPECT_EQ(ids_of(campaign(v, "email_marketing", "email")), std::set<std::string>{kept});
}

// A fetch of several pages (500 subjects each, candidates read in batches and
// filtered set-based by the store) leaves out restricted, objecting, withdrawn
// and erased subjects wherever they fall, serves every other one exactly once,
// and writes each line as the JSON library would.
TEST_F(Clocked, CampaignFetchFiltersOnEveryPage) {
  constexpr int kSubjects = 1234;
  std::vector<std::pair<std::string, int>> by_id;  // id, person number; sorted by id (the fetch order)
  for (int base = 0; base < kSubjects; base += 1000) {  // a batch holds at most 1,000
    Json people = Json::array();
    const int end = std::min(kSubjects, base + 1000);
    for (int i = base; i < end; ++i)
      people.push_back({{"fields", {{"given_name", "P" + std::to_string(i)}, {"email", "p" + std::to_string(i) + "@example.com"}}}});
    const Json created = v.service->batch_create(v.admin(), {{"subjects", people}});
    ASSERT_EQ(created["created"], end - base);
    for (int i = base; i < end; ++i)
      by_id.emplace_back(created["results"][static_cast<std::size_t>(i - base)]["id"], i);
  }
  std::sort(by_id.begin(), by_id.end());
  for (const auto& [id, i] : by_id) v.service->record_consent(v.admin(), id, grant("email_marketing", "email"), false);
  std::set<std::string> expected;
  for (const auto& [id, i] : by_id) expected.insert(id);
  ASSERT_EQ(ids_of(campaign(v, "email_marketing", "email")), expected);

  // Positions in fetch order: the second page (500-999), its first and last
  // places, the third page, and the last subject of all.
  const auto [restricted, restricted_n] = by_id[501];
  const auto [objecting, objecting_n] = by_id[999];
  const std::string withdrawn = by_id[1000].first;
  const std::string erased = by_id[700].first;
  const std::string last_restricted = by_id[kSubjects - 1].first;
  const auto officer = v.caller("compliance_officer", "dsr_fulfilment");
  for (const int n : {restricted_n, by_id[kSubjects - 1].second}) {
    const std::string req = v.service->dsr_create(officer, {{"type", "restriction"}, {"regime", "gdpr"},
                                                            {"identifier", {{"email", "p" + std::to_string(n) + "@example.com"}}},
                                                            {"channel", "web_form"}})["id"];
    for (const char* to : {"identity_verified", "in_progress", "completed"})
      v.service->dsr_transition(officer, req, {{"to", to}, {"note", "step"}});
  }
  v.service->record_consent(v.admin(), objecting, {{"event", "objection"}, {"source", "call_centre"}}, false);
  v.service->record_consent(v.admin(), withdrawn, {{"purpose", "email_marketing"}, {"channel", "email"},
                                                   {"event", "withdrawn"}, {"source", "email_link"}}, false);
  v.service->erase_subject(v.admin(), erased, "test: right to erasure");
  for (const auto& gone : {restricted, objecting, withdrawn, erased, last_restricted}) expected.erase(gone);
  ASSERT_EQ(expected.size(), static_cast<std::size_t>(kSubjects - 5));

  std::vector<std::string> served;
  v.service->campaign_fetch(v.caller("marketing", "email_marketing"),
                            {{"purpose", "email_marketing"}, {"channel", "email"}, {"fields", {"email", "given_name"}}},
                            [&](const std::string& line) {
                              const Json j = Json::parse(line);
                              EXPECT_EQ(j.dump() + "\n", line);
                              if (j.contains("id")) {
                                served.push_back(j["id"]);
                                EXPECT_EQ(j["fields"].size(), 2u) << line;
                              }
                              return true;
                            });
  EXPECT_TRUE(std::is_sorted(served.begin(), served.end()));
  EXPECT_EQ(std::set<std::string>(served.begin(), served.end()).size(), served.size()) << "a subject served twice";
  EXPECT_EQ(std::set<std::string>(served.begin(), served.end()), expected);
}

// ------------------------------------------------------------------ bulk export

// A whole-vault NDJSON export is an operator's migration tool, not a way for
// a role that reads one customer at a time to take every customer at once.
TEST(BulkExport, OnlyTheAdministrationPurposeExportsTheVault) {
  TestVault v;
  v.service->create_subject(v.admin(), {{"fields", {{"given_name", "Ada"}, {"email", "bulk@example.com"}}}});
  std::size_t lines = 0;
  const auto count = [&](const std::string&) {
    ++lines;
    return true;
  };
  for (const auto& attempt : std::vector<std::pair<std::string, std::string>>{
           {"service", "customer_service"}, {"sales", "sales"}, {"admin", "customer_service"}}) {
    // Named copies, not a structured binding: clang 14 cannot capture a binding in a lambda.
    const std::string role = attempt.first, purpose = attempt.second;
    EXPECT_EQ(code_of([&] { v.service->export_subjects(v.caller(role, purpose), {}, count); }),
              ErrorCode::purpose_not_allowed)
        << role << "/" << purpose;
  }
  EXPECT_EQ(lines, 0u);
  v.service->export_subjects(v.admin(), {}, count);
  EXPECT_EQ(lines, 1u);
}

// roles.yaml: "a category not listed is none". Every shipped role lists every
// category, so only an edited policy shows what the default is.
TEST(AccessPromises, ACategoryARoleWasNeverGivenIsNotShown) {
  TestVault v;
  const std::string id =
      v.service->create_subject(v.admin(), {{"fields", {{"given_name", "Vera"}, {"email", "vera@example.com"}}}})["id"];
  const auto roles_file = v.data_dir() / "policies" / "roles.yaml";
  std::stringstream text;
  text << std::ifstream(roles_file).rdbuf();
  std::string yaml = text.str();
  const std::string sales =
      "visibility: {identity: plain, contact: plain, descriptive: masked, qualitative: plain, quantitative: masked}";
  const auto at = yaml.find(sales);
  ASSERT_NE(at, std::string::npos);
  yaml.replace(at, sales.size(), "visibility: {identity: plain, descriptive: masked, qualitative: plain, quantitative: masked}");
  std::ofstream(roles_file) << yaml;
  std::string error;
  ASSERT_TRUE(v.service->reload_policies(&error)) << error;
  const Json got = v.service->get_subject(v.caller("sales", "sales"), id);
  EXPECT_EQ(got["fields"]["given_name"], "Vera");
  EXPECT_FALSE(got["fields"].contains("email")) << got.dump();
  EXPECT_EQ(got.dump().find("vera@example.com"), std::string::npos);
}

// ------------------------------------------------------------------ crypto

TEST(CryptoPromises, EverySealDrawsAFreshNonce) {
  const auto key = crypto::SecretKey::random();
  const std::string text = "same plaintext";
  const std::span<const std::uint8_t> pt(reinterpret_cast<const std::uint8_t*>(text.data()), text.size());
  const crypto::SealHeader header{crypto::kSealFormat, 1, 1};
  const auto a = crypto::seal(key, header, {}, pt);
  const auto b = crypto::seal(key, header, {}, pt);
  EXPECT_NE(a, b) << "two seals of one plaintext under one key are identical: the nonce repeats";
}

TEST(CryptoPromises, GeneratedKeysAreRandom) {
  const auto a = crypto::SecretKey::random();
  const auto b = crypto::SecretKey::random();
  EXPECT_NE(std::vector<std::uint8_t>(a.data(), a.data() + crypto::SecretKey::kSize),
            std::vector<std::uint8_t>(b.data(), b.data() + crypto::SecretKey::kSize));
  const std::vector<std::uint8_t> zero(crypto::SecretKey::kSize, 0);
  EXPECT_NE(std::vector<std::uint8_t>(a.data(), a.data() + crypto::SecretKey::kSize), zero);
}

TEST(CryptoPromises, ASealedFieldDoesNotOpenUnderAnotherFieldsName) {
  const auto key = crypto::SecretKey::random();
  const records::SubjectId subject{1, 2, 3};
  const std::string text = "ada@example.com";
  const std::span<const std::uint8_t> pt(reinterpret_cast<const std::uint8_t*>(text.data()), text.size());
  const crypto::SealHeader header{crypto::kSealFormat, 1, 1};
  const auto sealed = crypto::seal(key, header, crypto::field_ad(subject, "email", 1), pt);
  EXPECT_NO_THROW(crypto::open(key, crypto::field_ad(subject, "email", 1), sealed, "email"));
  EXPECT_EQ(code_of([&] { crypto::open(key, crypto::field_ad(subject, "phone", 1), sealed, "phone"); }),
            ErrorCode::integrity);
}

TEST(CryptoPromises, BlindIndexesDependOnTheKey) {
  const auto k1 = crypto::SecretKey::random();
  const auto k2 = crypto::SecretKey::random();
  EXPECT_NE(crypto::blind_index(k1, "ada@example.com"), crypto::blind_index(k2, "ada@example.com"));
  EXPECT_EQ(crypto::blind_index(k1, "ada@example.com"), crypto::blind_index(k1, "ada@example.com"));
}

}  // namespace
}  // namespace custos
