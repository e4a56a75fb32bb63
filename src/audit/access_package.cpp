#include "custos/audit/access_package.h"

#include <algorithm>

#include "custos_audit/entry.h"
#include "custos_audit/merkle.h"
#include "custos_audit/subjects.h"

namespace custos::audit {
namespace {

nlohmann::json hex_list(const std::vector<Hash>& hashes) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& h : hashes) out.push_back(auditfmt::to_hex(h));
  return out;
}

std::string hex_of(std::span<const std::uint8_t> bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * bytes.size());
  for (const std::uint8_t b : bytes) {
    out += kHex[b >> 4];
    out += kHex[b & 0xf];
  }
  return out;
}

// One entry as the subject may see it: the bytes the tree hashes, unless
// they name other subjects (a version-1 entry's list), with its proof.
nlohmann::json bundle_of(AuditLog& log, const auditfmt::Entry& e, std::string_view subject,
                         const Checkpoint& cp) {
  nlohmann::json b = {{"index", e.seq},
                      {"tree_size", cp.size},
                      {"proof", hex_list(log.inclusion_proof(e.seq, cp.size))},
                      {"checkpoint", cp.note}};
  auditfmt::Entry shown = e;  // what "decoded" shows: never another subject's id
  const auto withhold = [&](const char* why) {
    b["leaf_hash"] = auditfmt::to_hex(auditfmt::leaf_hash(auditfmt::encode(e)));
    b["withheld"] = why;
  };
  if (e.version == auditfmt::kEntryVersionCommitted && !e.subject_id.empty() && e.subject_id != subject) {
    // Committed to this subject, but about another (a refusal to give the
    // other subject this one's e-mail): its bytes name the other, so only
    // its leaf hash is given (inclusion still proven).
    withhold("the entry is about another subject");
    shown.subject_id.clear();
    shown.subject_ids.clear();
    shown.subject_salts.clear();
  } else if (e.version == auditfmt::kEntryVersionCommitted) {
    const auto it = std::find(e.subject_ids.begin(), e.subject_ids.end(), subject);
    if (it != e.subject_ids.end()) {
      const auto m = auditfmt::membership_of(e, static_cast<std::size_t>(it - e.subject_ids.begin()));
      b["membership"] = {{"subject_id", m.subject_id}, {"salt", hex_of(m.salt)}, {"index", m.index},
                         {"count", m.count},           {"path", hex_list(m.path)}};
    }
    shown.subject_ids.clear();
    shown.subject_salts.clear();
    b["entry"] = auditfmt::base64_encode(auditfmt::encode(e));
  } else if (std::any_of(e.subject_ids.begin(), e.subject_ids.end(), [&](const auto& id) { return id != subject; })) {
    // Written before entries committed to their subjects: its bytes name the
    // others, so only its leaf hash is given (inclusion still proven).
    withhold("the entry lists other subjects (entry version 1)");
    shown.subject_ids.assign(1, std::string(subject));
  } else {
    b["entry"] = auditfmt::base64_encode(auditfmt::encode(e));
  }
  b["decoded"] = nlohmann::json::parse(auditfmt::to_json(shown));
  return b;
}

}  // namespace

Checkpoint access_package_checkpoint(AuditLog& log) { return log.checkpoint_now(); }

void for_each_access_bundle(AuditLog& log, std::string_view subject_id, const Checkpoint& cp,
                            const std::function<void(nlohmann::json bundle)>& bundle) {
  Query q;
  q.subject_id = std::string(subject_id);
  q.limit = 1000;
  for (;;) {
    const auto page = log.query(q);
    for (const auto& e : page)
      if (e.seq < cp.size) bundle(bundle_of(log, e, subject_id, cp));
    if (page.size() < q.limit) break;
    q.after_seq = page.back().seq;
  }
}

nlohmann::json subject_access_log(AuditLog& log, std::string_view subject_id) {
  const Checkpoint cp = access_package_checkpoint(log);
  nlohmann::json entries = nlohmann::json::array();
  for_each_access_bundle(log, subject_id, cp, [&](nlohmann::json b) { entries.push_back(std::move(b)); });
  return {{"verifier_key", log.verifier_key()},
          {"checkpoint", cp.note},
          {"tree_size", cp.size},
          {"subject_id", std::string(subject_id)},
          {"entries", std::move(entries)}};
}

}  // namespace custos::audit
