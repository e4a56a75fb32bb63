// Issue 18, outbound: changes pushed to downstream systems. The real custosd
// delivers its outbox to a real HTTP receiver on 127.0.0.1 run by the test,
// which checks every delivery with reference Standard Webhooks code written
// here against OpenSSL (not the vault's libsodium signing).
//
// Every wait polls with a bound; backoff, timeouts and polling are set small
// on the daemon's command line so the tests are fast.
#include <atomic>
#include <functional>
#include <set>
#include <thread>

#include "http_support.h"
#include "webhook_receiver.h"

namespace custos::httptest {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using webhooktest::Answer;
using webhooktest::Delivery;
using webhooktest::Receiver;
using webhooktest::verify_webhook;
using custos::testing::run;

// ------------------------------------------------ fixture

// Small backoff and timeouts so retries happen in tenths of seconds.
const std::vector<std::string> kFastOutbox = {"--outbox-backoff-base-ms", "100", "--outbox-backoff-max-ms", "800",
                                              "--outbox-timeout-ms",      "600", "--outbox-poll-ms",        "20"};

class OutboxTest : public ::testing::Test {
 protected:
  void SetUp() override { vault_ = std::make_unique<Vault>(); }

  // Writes systems.yaml with the entries `extra`.
  void systems(const std::string& extra) {
    write_file(vault_->dir / "policies" / "systems.yaml", "systems:\n" + extra);
  }
  std::string secret(const std::string& system) {
    const auto r = run({kCli, "--data-dir", vault_->dir.string(), "system", "secret", system});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return trim(r.out);
  }
  void start(std::vector<std::string> extra = kFastOutbox) {
    d_ = start_daemon(vault_->dir, std::move(extra));
    ASSERT_TRUE(d_) << "custosd did not start";
  }
  std::string create(const Json& fields) {
    const Resp r = d_->post("/v1/subjects", vault_->admin, {{"fields", fields}});
    EXPECT_EQ(r.status, 201) << r;
    return r.json.value("id", "");
  }
  // Intake, verification, work, and the officer's `completed`.
  Json complete(const std::string& officer, const std::string& type, const std::string& email, Json extra = Json::object()) {
    Json body = {{"type", type}, {"regime", "gdpr"}, {"identifier", {{"email", email}}}};
    body.update(extra);
    Resp r = d_->post("/v1/dsr", officer, body);
    EXPECT_EQ(r.status, 201) << r;
    const std::string id = r.json.value("id", "");
    for (const char* to : {"identity_verified", "in_progress", "completed"}) {
      r = d_->post("/v1/dsr/" + id + ":transition", officer, {{"to", to}});
      EXPECT_EQ(r.status, 200) << type << " -> " << to << ": " << r;
    }
    return r.json;
  }
  Json cli_outbox(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {kCli, "--data-dir", vault_->dir.string(), "outbox"};
    argv.insert(argv.end(), args.begin(), args.end());
    const auto r = run(argv);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return Json::parse(r.out, nullptr, false);
  }
  // Polls GET /v1/dsr/{id} (bounded) until `done` holds.
  Json poll_dsr(const std::string& id, const std::string& token, const std::function<bool(const Json&)>& done,
                milliseconds bound = milliseconds(10000)) {
    const auto end = Clock::now() + bound;
    Json last;
    while (Clock::now() < end) {
      last = d_->get("/v1/dsr/" + id, token).json;
      if (done(last)) return last;
      std::this_thread::sleep_for(milliseconds(20));
    }
    return last;
  }
  std::string metric(const std::string& name) {
    const std::string text = d_->get("/metrics", vault_->admin).body;
    const auto at = text.find("\n" + name + " ");
    if (at == std::string::npos) return "";
    return text.substr(at + name.size() + 2, text.find('\n', at + 1) - at - name.size() - 2);
  }

  std::unique_ptr<Vault> vault_;
  std::unique_ptr<Daemon> d_;
};

// The delivery state of a request's first outbox event, or "".
std::string delivery_of(const Json& dsr) {
  if (!dsr.is_object() || !dsr.contains("downstream") || dsr["downstream"].empty()) return "";
  return dsr["downstream"][0].value("delivery", "");
}

bool timeline_has(const Json& dsr, const std::string& needle) {
  if (!dsr.is_object() || !dsr.contains("timeline")) return false;
  for (const auto& e : dsr["timeline"])
    if (e.value("note", "").find(needle) != std::string::npos) return true;
  return false;
}

// ------------------------------------------------ tests

TEST_F(OutboxTest, AnErasureIsDeliveredSignedConfirmedAndShownInTheTimeline) {
  Receiver rx;
  systems("  - {name: mailer, url: \"" + rx.url() + "\", events: [erasure], confirmation_required: true}\n");
  const std::string key = secret("mailer");
  ASSERT_EQ(key.rfind("whsec_", 0), 0u);
  const std::string mailer = vault_->token("downstream_system", "mailer");
  const std::string officer = vault_->token("compliance_officer", "dpo");
  start();
  const std::string sid = create({{"given_name", "Erin"}, {"email", "erin@example.com"}});

  Json q = complete(officer, "erasure", "erin@example.com");
  const std::string id = q.value("id", "");
  // Erased, but not complete until the mailer confirms.
  EXPECT_EQ(q.value("status", ""), "awaiting_confirmation") << q.dump();
  ASSERT_TRUE(rx.wait_for(1, milliseconds(10000)));
  const Delivery d = rx.deliveries().front();
  EXPECT_TRUE(verify_webhook(key, d.header("webhook-id"), d.header("webhook-timestamp"), d.header("webhook-signature"),
                             d.body))
      << d.body;
  EXPECT_EQ(d.header("webhook-id").rfind("msg_", 0), 0u);
  EXPECT_EQ(d.json["type"], "dsr.erasure");
  EXPECT_EQ(d.json["data"]["request_id"], id);
  EXPECT_EQ(d.json["data"]["subject_id"], sid);
  // Only what the event needs: no personal value.
  EXPECT_EQ(d.body.find("erin"), std::string::npos);
  EXPECT_EQ(d.body.find("Erin"), std::string::npos);

  q = poll_dsr(id, officer, [](const Json& j) { return timeline_has(j, "delivered to mailer"); });
  EXPECT_TRUE(timeline_has(q, "delivered to mailer")) << q.dump();
  ASSERT_EQ(q["downstream"].size(), 1u) << q.dump();
  EXPECT_EQ(q["downstream"][0]["delivery"], "delivered");

  // Another role, or another system's token, may not confirm.
  expect_problem(d_->post("/v1/dsr/" + id + "/confirmations", officer, {{"outcome", "done"}}), 403, "forbidden_role");
  expect_problem(d_->post("/v1/dsr/" + id + "/confirmations", mailer, {{"outcome", "maybe"}}), 422, "invalid_field");
  Resp c = d_->post("/v1/dsr/" + id + "/confirmations", mailer, {{"outcome", "done"}, {"note", "ticket 42"}});
  ASSERT_EQ(c.status, 201) << c;
  EXPECT_EQ(c.json["request_status"], "completed") << c;
  expect_problem(d_->post("/v1/dsr/" + id + "/confirmations", mailer, {{"outcome", "done"}}), 409, "conflict");
  q = d_->get("/v1/dsr/" + id, officer).json;
  EXPECT_EQ(q["status"], "completed");
  EXPECT_TRUE(timeline_has(q, "confirmed by mailer: done")) << q.dump();
  EXPECT_EQ(q["downstream"][0]["confirmation"]["outcome"], "done");
}

TEST_F(OutboxTest, AnErasureWaitingForConfirmationCompletesOnlyWithTheOfficersReason) {
  Receiver rx;
  systems("  - {name: mailer, url: \"" + rx.url() + "\", events: [erasure], confirmation_required: true}\n");
  secret("mailer");
  const std::string officer = vault_->token("compliance_officer", "dpo");
  start();
  create({{"email", "wait@example.com"}});
  Json q = complete(officer, "erasure", "wait@example.com");
  const std::string id = q.value("id", "");
  ASSERT_EQ(q.value("status", ""), "awaiting_confirmation") << q.dump();
  expect_problem(d_->post("/v1/dsr/" + id + ":transition", officer, {{"to", "completed"}}), 409, "conflict");
  const Resp r = d_->post("/v1/dsr/" + id + ":transition", officer,
                          {{"to", "completed"}, {"reason", "the processor confirmed by phone, ticket 7"}});
  ASSERT_EQ(r.status, 200) << r;
  EXPECT_EQ(r.json["status"], "completed");
  EXPECT_TRUE(timeline_has(r.json, "without the confirmation of mailer")) << r.json.dump();
}

TEST_F(OutboxTest, ARectificationCarriesOnlyTheChangedFieldsASystemMayReceive) {
  Receiver rx;
  systems("  - {name: billing, url: \"" + rx.url() + "\", events: [rectification], fields: [family_name]}\n"
          "  - {name: other, url: \"" + rx.url() + "\", events: [rectification], fields: [phone]}\n");
  secret("billing");
  secret("other");
  const std::string officer = vault_->token("compliance_officer", "dpo");
  start();
  create({{"given_name", "Rita"}, {"family_name", "Wrong"}, {"email", "rita@example.com"}});
  const Json q = complete(officer, "rectification", "rita@example.com",
                          {{"changes", {{"fields", {{"family_name", "Right"}, {"given_name", "Rita-Mae"}}}}}});
  ASSERT_EQ(q.value("status", ""), "completed") << q.dump();
  ASSERT_TRUE(rx.wait_for(1, milliseconds(10000)));
  // `other` may receive no changed field: no event was made for it.
  const Json events = cli_outbox({"list", "--json"});
  ASSERT_EQ(events["count"], 1) << events.dump();
  EXPECT_EQ(events["events"][0]["system"], "billing");
  const auto got = rx.deliveries();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].json["data"]["fields"], Json({{"family_name", "Right"}})) << got[0].body;
  EXPECT_EQ(got[0].body.find("Rita-Mae"), std::string::npos);
}

TEST_F(OutboxTest, AReceiverFailingThreeTimesIsRetriedWithGrowingBackoff) {
  Receiver rx([](const Delivery&, std::size_t nth) { return Answer{nth <= 3 ? 503 : 204, false}; });
  systems("  - {name: flaky, url: \"" + rx.url() + "\", events: [restriction]}\n");
  const std::string key = secret("flaky");
  const std::string officer = vault_->token("compliance_officer", "dpo");
  start();
  create({{"email", "flaky@example.com"}});
  const std::string id = complete(officer, "restriction", "flaky@example.com").value("id", "");
  ASSERT_TRUE(rx.wait_for(4, milliseconds(15000)));
  const auto got = rx.deliveries();
  // One event, one webhook-id across its attempts, each signed.
  for (const auto& d : got) {
    EXPECT_EQ(d.header("webhook-id"), got[0].header("webhook-id"));
    EXPECT_TRUE(verify_webhook(key, d.header("webhook-id"), d.header("webhook-timestamp"),
                               d.header("webhook-signature"), d.body));
  }
  // Base 100 ms, doubled per retry, jitter in [1/2, 1]: waits of 50-100,
  // 100-200 and 200-400 ms. Each gap is at least the one before, and the
  // third at least twice the first's upper bound.
  const auto gap = [&](std::size_t i) {
    return std::chrono::duration_cast<milliseconds>(got[i].at - got[i - 1].at).count();
  };
  EXPECT_GE(gap(1), 50);
  EXPECT_GE(gap(3), 200);
  EXPECT_GT(gap(3), gap(1));
  const Json q = poll_dsr(id, officer, [](const Json& j) { return delivery_of(j) == "delivered"; });
  EXPECT_EQ(q["downstream"][0]["attempts"], 4) << q.dump();
  EXPECT_EQ(q["downstream"][0]["last_status"], 204);
}

TEST_F(OutboxTest, AHangingReceiverTimesOutAndIsRetried) {
  Receiver rx([](const Delivery&, std::size_t nth) { return Answer{204, nth == 1}; });
  systems("  - {name: slow, url: \"" + rx.url() + "\", events: [restriction]}\n");
  secret("slow");
  const std::string officer = vault_->token("compliance_officer", "dpo");
  start();
  create({{"email", "slow@example.com"}});
  const std::string id = complete(officer, "restriction", "slow@example.com").value("id", "");
  ASSERT_TRUE(rx.wait_for(2, milliseconds(15000)));
  const auto got = rx.deliveries();
  // The second attempt came after the 600 ms request timeout.
  EXPECT_GE(std::chrono::duration_cast<milliseconds>(got[1].at - got[0].at).count(), 600);
  const Json q = poll_dsr(id, officer, [](const Json& j) { return delivery_of(j) == "delivered"; });
  EXPECT_EQ(delivery_of(q), "delivered") << q.dump();
  EXPECT_EQ(q["downstream"][0]["attempts"], 2);
}

TEST_F(OutboxTest, A4xxAnswerIsADeadLetterWithoutRetryUntilTheOperatorRetries) {
  std::atomic<int> answer{410};
  Receiver rx([&](const Delivery&, std::size_t) { return Answer{answer.load(), false}; });
  systems("  - {name: gone, url: \"" + rx.url() + "\", events: [restriction]}\n");
  secret("gone");
  const std::string officer = vault_->token("compliance_officer", "dpo");
  start();
  create({{"email", "gone@example.com"}});
  const std::string id = complete(officer, "restriction", "gone@example.com").value("id", "");
  Json q = poll_dsr(id, officer, [](const Json& j) { return delivery_of(j) == "dead"; });
  ASSERT_EQ(delivery_of(q), "dead") << q.dump();
  EXPECT_EQ(q["downstream"][0]["last_status"], 410);
  EXPECT_EQ(q["downstream"][0]["attempts"], 1);
  EXPECT_TRUE(timeline_has(q, "dead letter")) << q.dump();
  EXPECT_EQ(metric("custos_outbox_dead_letters"), "1");
  // Not retried: a dead letter is never claimed again (only pending events are).
  EXPECT_EQ(rx.count(), 1u);
  // The CLI shows it, and puts it back.
  const Json dead = cli_outbox({"list", "--status", "dead", "--json"});
  ASSERT_EQ(dead["count"], 1) << dead.dump();
  EXPECT_EQ(dead["events"][0]["last_status"], 410);
  answer = 204;
  cli_outbox({"retry", dead["events"][0]["id"].get<std::string>()});
  q = poll_dsr(id, officer, [](const Json& j) { return delivery_of(j) == "delivered"; });
  EXPECT_EQ(delivery_of(q), "delivered") << q.dump();
  EXPECT_EQ(metric("custos_outbox_dead_letters"), "0");
}

// A correction waiting for a downstream system holds the subject's new
// values, sealed under the vault's payload key, which erasing the subject
// (destroying its own key) does not reach: the erasure destroys it too, and
// it is never sent. A notice without values (here a consent change) is
// still owed to the system, and stays.
TEST_F(OutboxTest, AnErasedSubjectsUndeliveredCorrectionIsDestroyedWithItAndNeverSent) {
  std::atomic<int> answer{410};
  Receiver rx([&](const Delivery&, std::size_t) { return Answer{answer.load(), false}; });
  systems("  - {name: billing, url: \"" + rx.url() + "\", events: [rectification, consent], fields: [family_name]}\n");
  secret("billing");
  const std::string officer = vault_->token("compliance_officer", "dpo");
  start();
  const std::string id = create({{"given_name", "Rita"}, {"family_name", "Wrong"}, {"email", "rita@example.com"}});
  const Resp c = d_->post("/v1/subjects/" + id + "/consents", vault_->admin,
                          {{"purpose", "email_marketing"}, {"channel", "email"}, {"event", "withdrawn"}});
  ASSERT_EQ(c.status, 201) << c;
  const std::string fix = complete(officer, "rectification", "rita@example.com",
                                   {{"changes", {{"fields", {{"family_name", "Right"}}}}}})
                              .value("id", "");
  const Json q = poll_dsr(fix, officer, [](const Json& j) { return delivery_of(j) == "dead"; });
  ASSERT_EQ(delivery_of(q), "dead") << q.dump();
  ASSERT_TRUE(rx.wait_for(2, milliseconds(10000)));  // the consent notice was refused too
  answer = 204;  // the receiver would take them now
  EXPECT_EQ(complete(officer, "erasure", "rita@example.com").value("status", ""), "completed");
  const Json destroyed = cli_outbox({"list", "--status", "destroyed", "--json"});
  ASSERT_EQ(destroyed["count"], 1) << destroyed.dump();
  EXPECT_EQ(destroyed["events"][0]["event"], "rectification");
  EXPECT_NE(destroyed["events"][0].value("last_error", "").find("subject erased"), std::string::npos) << destroyed.dump();
  const auto retry = run({kCli, "--data-dir", vault_->dir.string(), "outbox", "retry",
                          destroyed["events"][0]["id"].get<std::string>()});
  EXPECT_NE(retry.exit_code, 0) << retry.out;
  const Json dead = cli_outbox({"list", "--status", "dead", "--json"});
  ASSERT_EQ(dead["count"], 1) << dead.dump();
  EXPECT_EQ(dead["events"][0]["event"], "consent");
  cli_outbox({"retry", dead["events"][0]["id"].get<std::string>()});
  ASSERT_TRUE(rx.wait_for(3, milliseconds(10000)));
  const auto got = rx.deliveries();  // the two refused first attempts, then the consent notice again
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[2].body.find("Right"), std::string::npos) << got[2].body;
  EXPECT_EQ(got[2].json["type"], "consent.changed") << got[2].body;
  EXPECT_EQ(metric("custos_outbox_dead_letters"), "0");
}

TEST_F(OutboxTest, ATamperedSignatureIsRejectedByTheReferenceReceiver) {
  Receiver rx;
  systems("  - {name: mailer, url: \"" + rx.url() + "\", events: [restriction]}\n");
  const std::string key = secret("mailer");
  const std::string officer = vault_->token("compliance_officer", "dpo");
  start();
  create({{"email", "tamper@example.com"}});
  complete(officer, "restriction", "tamper@example.com");
  ASSERT_TRUE(rx.wait_for(1, milliseconds(10000)));
  const Delivery d = rx.deliveries().front();
  const std::string id = d.header("webhook-id"), ts = d.header("webhook-timestamp"), sig = d.header("webhook-signature");
  ASSERT_TRUE(verify_webhook(key, id, ts, sig, d.body));
  std::string body = d.body;
  body[body.size() / 2] ^= 1;
  EXPECT_FALSE(verify_webhook(key, id, ts, sig, body)) << "a changed body";
  std::string bad_sig = sig;
  bad_sig[5] = bad_sig[5] == 'A' ? 'B' : 'A';
  EXPECT_FALSE(verify_webhook(key, id, ts, bad_sig, d.body)) << "a changed signature";
  EXPECT_FALSE(verify_webhook(key, id + "x", ts, sig, d.body)) << "another webhook-id";
  EXPECT_FALSE(verify_webhook(key, id, std::to_string(std::stoll(ts) + 1), sig, d.body)) << "another timestamp";
  // A rotated secret: the old deliveries no longer verify with it.
  const std::string rotated = secret("mailer");
  EXPECT_NE(rotated, key);
  EXPECT_FALSE(verify_webhook(rotated, id, ts, sig, d.body)) << "another secret";
}

TEST_F(OutboxTest, KillNineWithAHundredUndeliveredEventsLosesNone) {
  // The receiver is down (nothing listens on its port): every delivery fails.
  std::uint16_t port = 0;
  {
    Receiver probe;
    port = probe.port();
  }
  systems("  - {name: crm, url: \"http://127.0.0.1:" + std::to_string(port) + "/hook\", events: [consent]}\n");
  secret("crm");
  start();
  const std::string sid = create({{"email", "many@example.com"}});
  for (int i = 0; i < 100; ++i) {
    const Resp r = d_->post("/v1/subjects/" + sid + "/consents", vault_->admin,
                            {{"purpose", "email_marketing"}, {"channel", "email"},
                             {"event", i % 2 ? "granted" : "withdrawn"}, {"source", "import"}});
    ASSERT_EQ(r.status, 201) << r;
  }
  d_->stop(SIGKILL);
  ASSERT_FALSE(d_->alive());
  d_.reset();
  // Nothing delivered, nothing lost: 100 pending events in the store.
  Json pending = cli_outbox({"list", "--status", "pending", "--limit", "1000", "--json"});
  ASSERT_EQ(pending["count"], 100) << pending.dump().substr(0, 400);

  Receiver::port_hint_ = port;
  Receiver rx;
  Receiver::port_hint_ = 0;
  start({"--outbox-backoff-base-ms", "100", "--outbox-backoff-max-ms", "200", "--outbox-timeout-ms", "1000",
         "--outbox-poll-ms", "20"});
  ASSERT_TRUE(rx.wait_for(100, milliseconds(30000))) << rx.count();
  std::set<std::string> ids;
  for (const auto& d : rx.deliveries()) ids.insert(d.header("webhook-id"));
  EXPECT_EQ(ids.size(), 100u);
  std::set<std::string> expected;
  for (const auto& e : pending["events"]) expected.insert(e["id"].get<std::string>());
  EXPECT_EQ(ids, expected);
}

TEST_F(OutboxTest, APlainHttpUrlToAnotherHostIsRefusedAtPolicyLoad) {
  systems("  - {name: leaky, url: \"http://192.0.2.10/hook\", events: [erasure]}\n");
  auto r = run({kCli, "--data-dir", vault_->dir.string(), "system", "secret", "leaky"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("plain http:// is allowed only to a loopback host"), std::string::npos) << r.err;
  systems("  - {name: creds, url: \"https://user:pw@example.com/hook\", events: [erasure]}\n");
  r = run({kCli, "--data-dir", vault_->dir.string(), "system", "secret", "creds"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_EQ(r.err.find("pw@"), std::string::npos) << r.err;
  systems("  - {name: ftp, url: \"ftp://example.com/\", events: [erasure]}\n");
  EXPECT_EQ(run({kCli, "--data-dir", vault_->dir.string(), "system", "secret", "ftp"}).exit_code, 2);

  // A running custosd keeps its systems when a reload brings a bad URL.
  systems("  - {name: ok, url: \"https://hooks.example.com/custos\", events: [erasure]}\n");
  start();
  systems("  - {name: ok, url: \"http://hooks.example.com/custos\", events: [erasure]}\n");
  d_->signal(SIGHUP);
  const auto end = Clock::now() + milliseconds(5000);
  while (Clock::now() < end && d_->err().find("policy_reload") == std::string::npos)
    std::this_thread::sleep_for(milliseconds(20));
  EXPECT_NE(d_->err().find("plain http://"), std::string::npos) << d_->err();
  EXPECT_TRUE(d_->alive());
}

}  // namespace
}  // namespace custos::httptest
