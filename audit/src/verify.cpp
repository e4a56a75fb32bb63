#include "custos_audit/verify.h"

#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <vector>

#include "custos_audit/checkpoint.h"
#include "custos_audit/entry.h"
#include "custos_audit/export.h"
#include "custos_audit/merkle.h"

namespace custos::auditfmt {
namespace {

VerifyResult failure(std::string why) {
  VerifyResult r;
  r.error = std::move(why);
  return r;
}

}  // namespace

VerifyResult verify_export(std::istream& in, std::string_view vkey_text) {
  VerifierKey key;
  try {
    key = parse_vkey(vkey_text);
  } catch (const std::exception& e) {
    return failure(e.what());
  }
  std::optional<std::string> problem;
  ExportHeader header;
  std::vector<Checkpoint> checkpoints;
  // Perfect-subtree hashes by level, filled as entries stream in.
  std::vector<std::vector<Hash>> levels(1);
  Frontier frontier;
  std::map<std::uint64_t, Hash> roots_at;  // root recomputed at each signed size
  std::uint64_t index = 0;
  Hash prev_leaf{};
  // An unmatched link at entry k is blamed on k-1, unless entry k+1's link
  // breaks too (then entry k itself was changed): decided one entry later.
  std::optional<std::uint64_t> suspect;
  Hash last_link{};  // the link stored in the most recent entry

  const auto fail = [&](std::string why) {
    if (!problem) problem = std::move(why);
    return false;
  };

  ExportVisitor visitor;
  visitor.on_header = [&](const ExportHeader& h) {
    header = h;
    if (h.first_seq != 0) return fail("header: exports must start at entry 0 to be verified");
    if (h.public_key_fingerprint != fingerprint(key.key))
      return fail("header: the export was signed with another key (fingerprint mismatch)");
    // Sized from the (unsigned) header only as a hint, capped so a lying
    // header cannot make us allocate much.
    const std::uint64_t hint = std::min<std::uint64_t>(h.entry_count, std::uint64_t{1} << 26);
    levels[0].reserve(hint);
    return true;
  };
  visitor.on_checkpoint = [&](std::string_view note) {
    const std::size_t j = checkpoints.size();
    try {
      Checkpoint cp = parse_and_verify_checkpoint(note, key);
      if (cp.origin != header.origin) return fail("checkpoint " + std::to_string(j) + ": origin does not match");
      if (!checkpoints.empty() && cp.size <= checkpoints.back().size)
        return fail("checkpoint " + std::to_string(j) + ": sizes are not increasing");
      roots_at.emplace(cp.size, Hash{});
      checkpoints.push_back(std::move(cp));
    } catch (const std::exception& e) {
      return fail("checkpoint " + std::to_string(j) + ": " + e.what());
    }
    return true;
  };
  visitor.on_entry = [&](std::span<const std::uint8_t> bytes) {
    const std::uint64_t k = index;
    EntryView view;
    const char* why = nullptr;
    if (!parse_view(bytes, view, &why)) return fail("entry " + std::to_string(k) + ": malformed (" + why + ")");
    const bool link_ok = view.prev == (k == 0 ? Hash{} : prev_leaf);
    last_link = view.prev;
    if (suspect) {
      // Entry k-1's link was broken; if k's is broken too, k-1 itself changed.
      return fail("entry " + std::to_string(link_ok ? *suspect : k - 1) +
                  ": altered (its hash does not match the link stored in the next entry)");
    }
    if (view.seq != k) {
      return fail("entry " + std::to_string(k) + ": sequence number " + std::to_string(view.seq) + " where " +
                  std::to_string(k) + " was expected (" +
                  (view.seq > k ? "an entry before it is missing" : "an entry was inserted or reordered") + ")");
    }
    if (!link_ok) {
      if (k == 0) return fail("entry 0: altered (the first entry must not link to a predecessor)");
      suspect = k - 1;
    }
    const Hash leaf = leaf_hash(bytes);
    frontier.append(leaf);
    levels[0].push_back(leaf);
    for (const auto& [level, idx, hash] : frontier.completed()) {
      if (levels.size() <= level) {
        levels.resize(level + 1);
        levels[level].reserve(levels[0].capacity() >> level);
      }
      levels[level].push_back(hash);
    }
    if (auto it = roots_at.find(frontier.size()); it != roots_at.end()) it->second = frontier.root();
    prev_leaf = leaf;
    ++index;
    return true;
  };

  std::string read_error;
  const bool read_ok = read_export(in, visitor, read_error);
  if (problem) return failure(*problem);
  if (suspect) {
    // The last entry's link is broken: either the entry before it was altered
    // (then its stored link is that entry's true hash, and putting it back
    // reproduces the signed root) or the last entry itself was.
    std::uint64_t culprit = *suspect + 1;
    if (!checkpoints.empty() && checkpoints.back().size == index) {
      Frontier repaired;
      for (std::uint64_t i = 0; i < index; ++i) repaired.append(i == *suspect ? last_link : levels[0][i]);
      if (repaired.root() == checkpoints.back().root) culprit = *suspect;
    }
    return failure("entry " + std::to_string(culprit) +
                   ": altered (its hash does not match the link stored in the next entry)");
  }
  if (!read_ok) return failure("entry " + std::to_string(index) + ": " + read_error);
  if (index != header.entry_count)
    return failure("entry " + std::to_string(index) + ": export holds " + std::to_string(index) +
                   " entries, its header says " + std::to_string(header.entry_count) + " (truncated or padded)");
  if (checkpoints.size() != header.checkpoint_count)
    return failure("checkpoint " + std::to_string(checkpoints.size()) + ": export holds " +
                   std::to_string(checkpoints.size()) + " checkpoints, its header says " +
                   std::to_string(header.checkpoint_count));
  const SubtreeHashFn subtree = [&](unsigned level, std::uint64_t i) { return levels.at(level).at(i); };
  for (std::size_t j = 0; j < checkpoints.size(); ++j) {
    const Checkpoint& cp = checkpoints[j];
    if (cp.size > index)
      return failure("entry " + std::to_string(index) + ": checkpoint " + std::to_string(j) + " covers " +
                     std::to_string(cp.size) + " entries but only " + std::to_string(index) +
                     " are present (entries removed from the end)");
    const Hash root = cp.size == 0 ? empty_root() : roots_at.at(cp.size);
    if (root != cp.root)
      return failure("entry " + std::to_string(cp.size == 0 ? 0 : cp.size - 1) + ": altered (checkpoint " +
                     std::to_string(j) + " root does not match the entries)");
    if (j > 0) {
      const Checkpoint& before = checkpoints[j - 1];
      const auto proof = consistency_proof(before.size, cp.size, subtree);
      if (!verify_consistency(before.size, cp.size, before.root, cp.root, proof))
        return failure("checkpoint " + std::to_string(j) + ": not consistent with checkpoint " + std::to_string(j - 1));
    }
  }
  if (checkpoints.empty() && index > 0) return failure("entry 0: no signed checkpoint covers the entries");
  if (!checkpoints.empty() && checkpoints.back().size < index)
    return failure("entry " + std::to_string(checkpoints.back().size) + ": not covered by any signed checkpoint");
  VerifyResult ok;
  ok.ok = true;
  ok.entries = index;
  ok.checkpoints = checkpoints.size();
  const Hash final_root = checkpoints.empty() ? empty_root() : checkpoints.back().root;
  ok.summary = "ok: entries=" + std::to_string(index) + " checkpoints=" + std::to_string(checkpoints.size()) +
               " size=" + std::to_string(index) + " root=" + to_hex(final_root);
  return ok;
}

VerifyResult verify_inclusion_bundle(std::string_view bundle_json, std::string_view vkey) {
  try {
    const auto j = nlohmann::json::parse(bundle_json);
    const auto entry = base64_decode(j.at("entry").get<std::string>());
    if (!entry) return failure("bundle: 'entry' is not base64");
    const std::uint64_t index = j.at("index").get<std::uint64_t>();
    const std::uint64_t size = j.at("tree_size").get<std::uint64_t>();
    std::vector<Hash> proof;
    for (const auto& h : j.at("proof")) {
      const auto parsed = hash_from_hex(h.get<std::string>());
      if (!parsed) return failure("bundle: a proof hash is not 64 hex digits");
      proof.push_back(*parsed);
    }
    const Checkpoint cp = parse_and_verify_checkpoint_vkey(j.at("checkpoint").get<std::string>(), vkey);
    if (cp.size != size) return failure("bundle: checkpoint size does not match tree_size");
    EntryView view;
    const char* why = nullptr;
    if (!parse_view(*entry, view, &why)) return failure(std::string("entry: malformed (") + why + ")");
    if (view.seq != index) return failure("entry: its sequence number is not the proven index");
    if (!verify_inclusion(index, size, leaf_hash(*entry), proof, cp.root))
      return failure("entry " + std::to_string(index) + ": inclusion proof does not verify against the checkpoint");
    VerifyResult ok;
    ok.ok = true;
    ok.entries = 1;
    ok.checkpoints = 1;
    ok.summary = "ok: entry " + std::to_string(index) + " is included in the signed tree of size " +
                 std::to_string(size) + " root=" + to_hex(cp.root);
    return ok;
  } catch (const nlohmann::json::exception&) {
    return failure("bundle: not the expected JSON document");
  } catch (const std::exception& e) {
    return failure(e.what());
  }
}

}  // namespace custos::auditfmt
