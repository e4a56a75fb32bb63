// Several custosd nodes on one store (issue 16): a policy reload asked for
// once reaches every node, each node says what it did, and scheduled work
// (retention) runs once per schedule, not once per node. The tables are the
// service's own (schema.cpp, module "cluster"); one node works the same way.
#include <algorithm>

#include "custos/audit/audit_log.h"
#include "custos/error.h"
#include "service_impl.h"

namespace custos::service {

namespace {

using store::Row;
using store::TxMode;

// A node that has not reported for this long is not waited for.
constexpr std::int64_t kLiveUs = 15'000'000;
// How often a node that has nothing to do writes that it is alive.
constexpr std::int64_t kSeenEveryUs = 5'000'000;
// A refused policy's reason, as a node records it: enough to find the line.
constexpr std::size_t kMaxDetail = 300;

std::int64_t latest_generation(store::Transaction& tx) {
  return tx.scalar("SELECT max(generation) FROM policy_reloads").value_or(0);
}

// One row per node: updated in place, inserted the first time.
void record_node(store::Transaction& tx, const std::string& node, std::int64_t now, std::int64_t generation, bool ok,
                 const std::string& detail) {
  const std::int64_t changed =
      tx.exec("UPDATE cluster_nodes SET seen_at = ?, policy_generation = ?, policy_applied_at = ?, policy_ok = ?,"
              " policy_detail = ? WHERE node_id = ?",
              {now, generation, now, ok ? 1 : 0, detail, node});
  if (changed == 0)
    tx.exec("INSERT INTO cluster_nodes (node_id, seen_at, policy_generation, policy_applied_at, policy_ok, policy_detail)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            {node, now, generation, now, ok ? 1 : 0, detail});
}

audit::Actor system_actor(const std::string& node) {
  return {"system:" + node, "system", "", "administration", "policy-reload"};
}

}  // namespace

Json Service::request_policy_reload(const Caller& caller) {
  impl_->authorize(caller, *impl_->current_policy(), "admin", "policy.reload", false);
  const audit::Actor actor = impl_->actor(caller);
  auto tx = impl_->store->begin(TxMode::write);
  const std::int64_t generation = latest_generation(*tx) + 1;
  const std::int64_t now = impl_->audit->now_us();
  tx->exec("INSERT INTO policy_reloads (generation, requested_at, requested_by) VALUES (?, ?, ?)",
           {generation, now, actor.principal});
  impl_->audit->append(*tx, actor,
                       {"policy.reload_request", "", {}, {}, true, "", "generation=" + std::to_string(generation)});
  tx->commit();
  return {{"generation", generation}, {"requested_at", audit::format_time_us(now)}};
}

Json Service::cluster_status(const Caller& caller) {
  impl_->authorize(caller, *impl_->current_policy(), "admin", "cluster.status", false);
  const std::int64_t now = impl_->audit->now_us();
  auto tx = impl_->store->begin(TxMode::read);
  Json nodes = Json::array();
  tx->exec("SELECT node_id, seen_at, policy_generation, policy_applied_at, policy_ok, policy_detail FROM cluster_nodes"
           " ORDER BY node_id",
           {}, [&](const Row& r) {
             nodes.push_back({{"node_id", std::string(r.text(0))},
                              {"seen_at", audit::format_time_us(r.integer(1))},
                              {"live", now - r.integer(1) <= kLiveUs},
                              {"policy_generation", r.integer(2)},
                              {"policy_applied_at", audit::format_time_us(r.integer(3))},
                              {"policy_ok", r.integer(4) != 0},
                              {"policy_detail", std::string(r.text(5))}});
           });
  Json leases = Json::array();
  tx->exec("SELECT name, holder, since, expires_at FROM leases ORDER BY name", {}, [&](const Row& r) {
    leases.push_back({{"name", std::string(r.text(0))},
                      {"holder", std::string(r.text(1))},
                      {"since", audit::format_time_us(r.integer(2))},
                      {"expires_at", audit::format_time_us(r.integer(3))},
                      {"held", r.integer(3) > now}});
  });
  Json out = {{"generation", latest_generation(*tx)}, {"nodes", std::move(nodes)}, {"leases", std::move(leases)}};
  tx.reset();
  // Whether someone is signing: the latest checkpoint, by whichever node.
  const auto cp = impl_->audit->latest_checkpoint();
  out["checkpoint"] = cp ? Json{{"size", cp->size}, {"time", audit::format_time_us(cp->at_us)}} : Json(nullptr);
  return out;
}

std::int64_t Service::Impl::latest_policy_generation() {
  auto tx = store->begin(TxMode::read);
  return latest_generation(*tx);
}

std::optional<bool> Service::follow_cluster(std::string* error) {
  const std::string& node = impl_->options.node_id;
  util::MutexLock lock(impl_->cluster_mu);
  const std::int64_t latest = impl_->latest_policy_generation();
  const std::int64_t now = impl_->audit->now_us();
  if (!impl_->node_recorded) {
    // The files as read at open, under the generation that was latest then
    // (Service::open reads it before them): a reload asked for since then
    // is followed below.
    auto tx = impl_->store->begin(TxMode::write);
    record_node(*tx, node, now, impl_->applied_policy_generation, true, "loaded at start");
    tx->commit();
    impl_->node_recorded = true;
    impl_->last_seen_written_us = now;
  }
  if (latest <= impl_->applied_policy_generation) {
    if (now - impl_->last_seen_written_us >= kSeenEveryUs) {
      auto tx = impl_->store->begin(TxMode::write);
      tx->exec("UPDATE cluster_nodes SET seen_at = ? WHERE node_id = ?", {now, node});
      tx->commit();
      impl_->last_seen_written_us = now;
    }
    return std::nullopt;
  }
  std::string reason;
  const bool ok = reload_policies(&reason);
  const std::string detail = ok ? "applied" : util::printable_prefix(reason, kMaxDetail);
  auto tx = impl_->store->begin(TxMode::write);
  record_node(*tx, node, now, latest, ok, detail);
  // The reason stays in the node's row and log; the entry says only the outcome.
  impl_->audit->append(*tx, system_actor(node),
                       {"policy.reload", "", {}, {}, ok, ok ? "" : "policy_refused",
                        "generation=" + std::to_string(latest)});
  tx->commit();
  // A refused generation is not tried again: the operator fixes the files
  // and asks for a new one.
  impl_->applied_policy_generation = latest;
  impl_->last_seen_written_us = now;
  if (!ok && error) *error = reason;
  return ok;
}

bool Service::claim_schedule(const std::string& name, std::chrono::milliseconds interval) {
  const std::string& node = impl_->options.node_id;
  const std::int64_t now = impl_->audit->now_us();
  const std::int64_t next = now + static_cast<std::int64_t>(interval.count()) * 1000;
  {
    auto tx = impl_->store->begin(TxMode::read);
    const auto due = tx->scalar("SELECT next_run_at FROM schedules WHERE name = ?", {name});
    if (due && *due > now) return false;
  }
  auto tx = impl_->store->begin(TxMode::write);
  const auto due = tx->scalar("SELECT next_run_at FROM schedules WHERE name = ?", {name});
  if (!due) {
    // The first node to ask starts the clock; the first run is one interval on.
    tx->exec("INSERT INTO schedules (name, next_run_at, claimed_by) VALUES (?, ?, ?)", {name, next, node});
    tx->commit();
    return false;
  }
  // Writers are serialised (one write transaction at a time, across nodes on
  // PostgreSQL), so of the nodes that found it due only the first moves it.
  const bool claimed =
      tx->exec("UPDATE schedules SET next_run_at = ?, claimed_by = ? WHERE name = ? AND next_run_at <= ?",
               {next, node, name, now}) == 1;
  tx->commit();
  return claimed;
}

bool Service::hold_lease(const std::string& name, std::chrono::milliseconds term) {
  const std::string& node = impl_->options.node_id;
  const std::int64_t term_us = static_cast<std::int64_t>(term.count()) * 1000;
  const std::int64_t now = impl_->audit->now_us();
  util::MutexLock lock(impl_->cluster_mu);
  if (const auto it = impl_->leases_held.find(name); it != impl_->leases_held.end()) {
    if (now < it->second - term_us / 2) return true;  // more than half the term left
    impl_->leases_held.erase(it);  // renewed below, or lost
  }
  struct Lease {
    std::string holder;
    std::int64_t since = 0, expires_at = 0;
  };
  const auto read_lease = [&](store::Transaction& tx) {
    std::optional<Lease> out;
    tx.exec("SELECT holder, since, expires_at FROM leases WHERE name = ?", {name},
            [&](const Row& r) { out = Lease{std::string(r.text(0)), r.integer(1), r.integer(2)}; });
    return out;
  };
  {
    // Another node's running term: a read says so without a write.
    auto tx = impl_->store->begin(TxMode::read);
    const auto lease = read_lease(*tx);
    if (lease && lease->holder != node && lease->expires_at > now) return false;
  }
  // Writers are serialised (across nodes on PostgreSQL too): of the nodes
  // that found it free, the first takes it and the others see its term.
  auto tx = impl_->store->begin(TxMode::write);
  const auto lease = read_lease(*tx);
  const std::int64_t until = now + term_us;
  if (!lease) {
    tx->exec("INSERT INTO leases (name, holder, since, expires_at) VALUES (?, ?, ?, ?)", {name, node, now, until});
  } else if (lease->holder == node || lease->expires_at <= now) {
    const std::int64_t since = lease->holder == node && lease->expires_at > now ? lease->since : now;
    tx->exec("UPDATE leases SET holder = ?, since = ?, expires_at = ? WHERE name = ?", {node, since, until, name});
  } else {
    return false;
  }
  tx->commit();
  impl_->leases_held[name] = until;
  return true;
}

void Service::release_lease(const std::string& name) {
  const std::string& node = impl_->options.node_id;
  util::MutexLock lock(impl_->cluster_mu);
  impl_->leases_held.erase(name);
  auto tx = impl_->store->begin(TxMode::write);
  tx->exec("DELETE FROM leases WHERE name = ? AND holder = ?", {name, node});
  tx->commit();
}

}  // namespace custos::service
