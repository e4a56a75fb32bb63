// Several custosd nodes on one store (issue 16): a policy reload asked for
// once is followed by every node, each node records what it did (applied,
// or refused with the old policy kept), and a schedule (retention) is run by
// one node per interval, not by each. Two Service instances with their own
// node ids stand for two custosd processes on one vault; against
// PostgreSQL (CUSTOS_TEST_STORE) they share the database as real nodes do.
#include <gtest/gtest.h>

#include <atomic>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "custos/error.h"
#include "test_support.h"

namespace custos {
namespace {

using Json = nlohmann::json;
using testing::TestVault;

constexpr std::int64_t kSecond = 1'000'000;

struct TwoNodes {
  TestVault v;
  std::shared_ptr<std::atomic<std::int64_t>> now = std::make_shared<std::atomic<std::int64_t>>(1767225600LL * kSecond);
  std::unique_ptr<service::Service> other;
  TwoNodes() {
    auto n = now;
    v.use_clock([n] { return n->load(); });
    service::OpenOptions o = v.open_options();
    o.node_id = "node-2";
    o.audit_journal = false;  // the first node's process holds the journal
    o.clock_us = [n] { return n->load(); };
    other = service::Service::open(o);
  }
  service::Service& first() { return *v.service; }
  void advance(std::int64_t us) { *now += us; }
  void write_roles(const std::string& yaml) { std::ofstream(v.data_dir() / "policies" / "roles.yaml") << yaml; }
  std::string roles() const {
    std::stringstream text;
    text << std::ifstream(v.data_dir() / "policies" / "roles.yaml").rdbuf();
    return text.str();
  }
  Json node(const std::string& id) {
    const Json status = first().cluster_status(v.admin());  // alive through the loop
    for (const auto& n : status["nodes"])
      if (n["node_id"] == id) return n;
    return nullptr;
  }
};

std::string with_reviewer_role(std::string yaml) {
  const std::string anchor = "roles:\n";
  const auto at = yaml.find(anchor);
  yaml.insert(at + anchor.size(), "  reviewer:\n    operations: [audit]\n    purposes: [audit]\n");
  return yaml;
}

TEST(Cluster, AReloadAskedForOnceIsFollowedByEveryNode) {
  TwoNodes t;
  // Each node says it is there, running the files it read at start.
  EXPECT_FALSE(t.first().follow_cluster(nullptr).has_value());
  EXPECT_FALSE(t.other->follow_cluster(nullptr).has_value());
  Json status = t.first().cluster_status(t.v.admin());
  EXPECT_EQ(status["generation"], 0);
  ASSERT_EQ(status["nodes"].size(), 2u) << status;
  for (const auto& n : status["nodes"]) {
    EXPECT_TRUE(n["live"].get<bool>());
    EXPECT_EQ(n["policy_generation"], 0);
  }

  t.write_roles(with_reviewer_role(t.roles()));
  EXPECT_EQ(t.first().policy()->role("reviewer"), nullptr) << "nothing reloads before it is asked";
  const Json asked = t.other->request_policy_reload(t.v.admin());
  EXPECT_EQ(asked["generation"], 1);
  t.advance(kSecond);
  EXPECT_EQ(t.first().follow_cluster(nullptr), std::optional<bool>(true));
  EXPECT_EQ(t.other->follow_cluster(nullptr), std::optional<bool>(true));
  EXPECT_NE(t.first().policy()->role("reviewer"), nullptr);
  EXPECT_NE(t.other->policy()->role("reviewer"), nullptr);
  for (const char* id : {"node-1", "node-2"}) {
    const Json n = t.node(id);
    ASSERT_TRUE(n.is_object()) << id << ": " << t.first().cluster_status(t.v.admin());
    EXPECT_EQ(n["policy_generation"], 1) << n;
    EXPECT_TRUE(n["policy_ok"].get<bool>()) << n;
  }
  // Once: the next look finds nothing to do.
  EXPECT_FALSE(t.first().follow_cluster(nullptr).has_value());

  // A file that does not load: each node keeps the policy in force and says why.
  std::string broken = t.roles();
  broken.replace(broken.find("reviewer:"), 9, "reviewer: [");
  t.write_roles(broken);
  t.first().request_policy_reload(t.v.admin());
  t.advance(kSecond);
  std::string error;
  EXPECT_EQ(t.first().follow_cluster(&error), std::optional<bool>(false));
  EXPECT_FALSE(error.empty());
  EXPECT_EQ(t.other->follow_cluster(nullptr), std::optional<bool>(false));
  EXPECT_NE(t.first().policy()->role("reviewer"), nullptr) << "the previous policy stays in force";
  const Json n2 = t.node("node-2");
  ASSERT_TRUE(n2.is_object());
  EXPECT_EQ(n2["policy_generation"], 2);
  EXPECT_FALSE(n2["policy_ok"].get<bool>());
  EXPECT_NE(n2["policy_detail"].get<std::string>().find("roles.yaml"), std::string::npos) << n2;

  // Both are in the audit log: who asked, and what each node did.
  const Json asked_by = t.first().audit_entries(t.v.caller("auditor", "audit"), {{"principal", "system:node-2"}});
  int reloads = 0, refused = 0;
  for (const auto& e : asked_by["entries"])
    if (e["operation"] == "policy.reload") ++(e["outcome"] == "allowed" ? reloads : refused);
  EXPECT_EQ(reloads, 1) << asked_by;
  EXPECT_EQ(refused, 1) << asked_by;

  // A node that stops reporting is no longer counted as live.
  t.advance(20 * kSecond);
  EXPECT_FALSE(t.first().follow_cluster(nullptr).has_value());  // node-1 reports; node-2 is silent
  EXPECT_TRUE(t.node("node-1")["live"].get<bool>());
  EXPECT_FALSE(t.node("node-2")["live"].get<bool>());
}

TEST(Cluster, OnlyAdminsMayReloadOrReadTheNodes) {
  TwoNodes t;
  const auto refused = [](ErrorCode c) { return c == ErrorCode::forbidden_role || c == ErrorCode::purpose_not_allowed; };
  for (const char* role : {"marketing", "auditor", "compliance_officer"}) {
    EXPECT_TRUE(refused(testing::code_of([&] { t.first().request_policy_reload(t.v.caller(role, "audit")); })))
        << role;
    EXPECT_TRUE(refused(testing::code_of([&] { t.first().cluster_status(t.v.caller(role, "audit")); }))) << role;
  }
  EXPECT_EQ(t.first().cluster_status(t.v.admin())["generation"], 0) << "a refused request asked for nothing";
}

TEST(Cluster, OneNodeRunsEachScheduledRun) {
  TwoNodes t;
  const auto hour = std::chrono::milliseconds(3600 * 1000);
  // The first claim starts the clock; nothing runs at once.
  EXPECT_FALSE(t.first().claim_schedule("retention", hour));
  EXPECT_FALSE(t.other->claim_schedule("retention", hour));
  t.advance(1800 * kSecond);
  EXPECT_FALSE(t.first().claim_schedule("retention", hour));
  EXPECT_FALSE(t.other->claim_schedule("retention", hour));
  // Due: exactly one of the nodes gets it, whichever asks first.
  t.advance(1800 * kSecond);
  EXPECT_TRUE(t.other->claim_schedule("retention", hour));
  EXPECT_FALSE(t.first().claim_schedule("retention", hour));
  EXPECT_FALSE(t.other->claim_schedule("retention", hour));
  t.advance(3600 * kSecond);
  EXPECT_TRUE(t.first().claim_schedule("retention", hour));
  EXPECT_FALSE(t.other->claim_schedule("retention", hour));
  // Schedules are independent of each other.
  EXPECT_FALSE(t.first().claim_schedule("other", hour));
}

// The node that signs audit checkpoints (custosd) holds a lease: one node at
// a time, renewed while it lives, taken over once its term ends (a node
// killed -9 never gives it up), handed over at once by a clean shutdown.
TEST(Cluster, OneNodeHoldsALeaseAndAnotherTakesOverWhenItsTermEnds) {
  TwoNodes t;
  const auto term = std::chrono::milliseconds(5000);
  const auto holder = [&] {
    const Json status = t.first().cluster_status(t.v.admin());  // alive through the loop
    for (const auto& l : status["leases"])
      if (l["name"] == "audit-checkpoints" && l["held"].get<bool>()) return l["holder"].get<std::string>();
    return std::string();
  };
  EXPECT_EQ(holder(), "");
  EXPECT_TRUE(t.first().hold_lease("audit-checkpoints", term));
  EXPECT_FALSE(t.other->hold_lease("audit-checkpoints", term));
  EXPECT_EQ(holder(), "node-1");
  // The holder renews it while it lives: the other never gets it.
  for (int i = 0; i < 10; ++i) {
    t.advance(2 * kSecond);
    EXPECT_TRUE(t.first().hold_lease("audit-checkpoints", term)) << i;
    EXPECT_FALSE(t.other->hold_lease("audit-checkpoints", term)) << i;
  }
  const Json held = t.first().cluster_status(t.v.admin())["leases"][0];
  EXPECT_EQ(held["since"], "2026-01-01T00:00:00.000000Z") << held;  // renewals keep when it was taken
  // The holder stops asking (killed): not before its term ends...
  t.advance(4 * kSecond);
  EXPECT_FALSE(t.other->hold_lease("audit-checkpoints", term));
  // ...and at once after it.
  t.advance(1 * kSecond);
  EXPECT_TRUE(t.other->hold_lease("audit-checkpoints", term));
  EXPECT_EQ(holder(), "node-2");
  // The first node, back, finds it taken: its own memory of holding it ran
  // out with its term.
  EXPECT_FALSE(t.first().hold_lease("audit-checkpoints", term));
  // A clean shutdown gives it up, and the other node takes it at its next look.
  t.other->release_lease("audit-checkpoints");
  EXPECT_TRUE(t.first().hold_lease("audit-checkpoints", term));
  EXPECT_EQ(holder(), "node-1");
  // Leases are independent of each other.
  EXPECT_TRUE(t.other->hold_lease("something-else", term));
}

TEST(Cluster, ALeaseStillInTermIsNotTakenEvenIfItsHolderHasNotRenewedLocally) {
  TwoNodes t;
  const auto term = std::chrono::milliseconds(5000);
  ASSERT_TRUE(t.first().hold_lease("audit-checkpoints", term));
  // Past half the term the holder writes again; the other node, asking in
  // between, sees the term still running.
  t.advance(3 * kSecond);
  EXPECT_FALSE(t.other->hold_lease("audit-checkpoints", term));
  EXPECT_TRUE(t.first().hold_lease("audit-checkpoints", term));  // renewed: now until 8 s
  t.advance(4 * kSecond);
  EXPECT_FALSE(t.other->hold_lease("audit-checkpoints", term));
}

}  // namespace
}  // namespace custos
