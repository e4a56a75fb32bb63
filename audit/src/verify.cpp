#include "custos_audit/verify.h"

#include <algorithm>
#include <cstring>
#include <functional>
#include <iterator>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>
#include <vector>

#include "custos_audit/checkpoint.h"
#include "custos_audit/entry.h"
#include "custos_audit/export.h"
#include "custos_audit/merkle.h"
#include "custos_audit/subjects.h"

namespace custos::auditfmt {
namespace {

VerifyResult failure(std::string why, bool integrity = true) {
  VerifyResult r;
  r.error = std::move(why);
  r.integrity = integrity;
  return r;
}

// A signed size and root, and what the entries said about it.
struct SignedHead {
  std::uint64_t size = 0;
  Hash root{};
  enum class State { waiting, matched, mismatched } state = State::waiting;
};

// A checkpoint given as a note, or as the JSON `GET /v1/audit/checkpoint` returns ({"note": ...}).
std::string note_of(const std::string& text) {
  if (text.empty() || text[0] != '{') return text;
  const auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_object() && j.contains("note") && j["note"].is_string()) return j["note"].get<std::string>();
  return text;
}

}  // namespace

VerifyResult verify_export(std::istream& in, std::string_view vkey_text, const VerifyOptions& options) {
  VerifierKey key;
  try {
    key = parse_vkey(vkey_text);
  } catch (const std::exception& e) {
    return failure(e.what());
  }
  std::optional<SignedHead> trusted;
  if (options.trusted_checkpoint) {
    try {
      const Checkpoint cp = parse_and_verify_checkpoint(note_of(*options.trusted_checkpoint), key);
      trusted = SignedHead{cp.size, cp.root};
    } catch (const std::exception& e) {
      return failure(std::string("trusted checkpoint: ") + e.what());
    }
  }
  std::optional<std::string> problem;
  ExportHeader header;
  // Only sizes and roots are kept (40 bytes a checkpoint); entries stream
  // through a frontier of O(log n) hashes: memory does not grow with the log.
  std::vector<SignedHead> heads;
  std::size_t next_head = 0;  // the first head whose size the frontier has not reached
  Frontier frontier;
  // Each entry's leaf joins the tree when the next entry arrives, so the
  // frontier before the previous entry is still at hand if that entry turns
  // out to be the altered one (step 6 of FORMAT.md §4).
  std::optional<Hash> pending_leaf;
  std::optional<Frontier> before_suspect;
  std::uint64_t index = 0;
  Hash prev_leaf{};
  std::optional<std::uint64_t> suspect;
  Hash last_link{};
  // The commitment of the last entry, while its openings may still follow.
  std::optional<std::pair<std::uint32_t, Hash>> open_commitment;
  std::vector<std::string> opened_ids;
  std::vector<SubjectSalt> opened_salts;

  const auto fail = [&](std::string why) {
    if (!problem) problem = std::move(why);
    return false;
  };
  const auto add_leaf = [&](const Hash& leaf) {
    frontier.append(leaf);
    while (next_head < heads.size() && heads[next_head].size == frontier.size()) {
      SignedHead& h = heads[next_head++];
      h.state = frontier.root() == h.root ? SignedHead::State::matched : SignedHead::State::mismatched;
    }
    if (trusted && trusted->state == SignedHead::State::waiting && trusted->size == frontier.size())
      trusted->state = frontier.root() == trusted->root ? SignedHead::State::matched : SignedHead::State::mismatched;
  };

  ExportVisitor visitor;
  visitor.on_header = [&](const ExportHeader& h) {
    header = h;
    if (h.first_seq != 0) return fail("header: exports must start at entry 0 to be verified");
    if (h.public_key_fingerprint != fingerprint(key.key))
      return fail("header: the export was signed with another key (fingerprint mismatch)");
    return true;
  };
  visitor.on_checkpoint = [&](std::string_view note) {
    const std::size_t j = heads.size();
    try {
      const Checkpoint cp = parse_and_verify_checkpoint(note, key);
      if (cp.origin != header.origin) return fail("checkpoint " + std::to_string(j) + ": origin does not match");
      if (!heads.empty() && cp.size <= heads.back().size)
        return fail("checkpoint " + std::to_string(j) + ": sizes are not increasing");
      SignedHead h{cp.size, cp.root};
      if (cp.size == 0) {
        h.state = cp.root == empty_root() ? SignedHead::State::matched : SignedHead::State::mismatched;
      } else if (cp.size <= frontier.size()) {
        h.state = SignedHead::State::mismatched;  // after the entries it covers: too late to be checked
      }
      heads.push_back(h);
      if (h.state != SignedHead::State::waiting && next_head == heads.size() - 1) ++next_head;
    } catch (const std::exception& e) {
      return fail("checkpoint " + std::to_string(j) + ": " + e.what());
    }
    return true;
  };
  // Each entry comes with its leaf hash, computed on a helper thread while
  // this one checks the entries before it (export.h): the hashes are most of
  // the work, and with them off this thread it no longer bounds the rate.
  visitor.on_hashed_entry = [&](std::span<const std::uint8_t> bytes, const Hash& leaf) {
    const std::uint64_t k = index;
    open_commitment.reset();
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
      before_suspect = frontier;  // entry k-1's leaf is still pending
    }
    if (pending_leaf) add_leaf(*pending_leaf);
    pending_leaf = leaf;
    prev_leaf = leaf;
    if (view.version == kEntryVersionCommitted) open_commitment.emplace(view.subject_count, view.subject_root);
    ++index;
    return true;
  };
  visitor.on_openings = [&](std::span<const std::uint8_t> bytes) {
    const std::string at = "entry " + std::to_string(index == 0 ? 0 : index - 1) + ": ";
    if (!open_commitment) return fail(at + "subject openings where no entry commits to its subjects");
    const char* why = nullptr;
    if (!decode_openings(bytes, opened_ids, opened_salts, &why))
      return fail(at + "malformed subject openings (" + why + ")");
    if (!openings_match(opened_ids, opened_salts, open_commitment->first, open_commitment->second))
      return fail(at + "altered (its subject openings do not match its subject commitment)");
    open_commitment.reset();  // one set of openings per entry
    return true;
  };

  std::string read_error;
  const bool read_ok = read_export(in, visitor, read_error);
  if (problem) return failure(*problem);
  const std::optional<Hash> last_leaf = pending_leaf;
  if (pending_leaf) add_leaf(*pending_leaf);
  if (suspect) {
    // The last entry's link is broken: either the entry before it was altered
    // (then its stored link is that entry's true hash, and putting it back
    // reproduces the signed root) or the last entry itself was.
    std::uint64_t culprit = *suspect + 1;
    if (!heads.empty() && heads.back().size == index && before_suspect && last_leaf) {
      Frontier repaired = *before_suspect;
      repaired.append(last_link);
      repaired.append(*last_leaf);
      if (repaired.root() == heads.back().root) culprit = *suspect;
    }
    return failure("entry " + std::to_string(culprit) +
                   ": altered (its hash does not match the link stored in the next entry)");
  }
  if (!read_ok) return failure("entry " + std::to_string(index) + ": " + read_error);
  if (index != header.entry_count)
    return failure("entry " + std::to_string(index) + ": export holds " + std::to_string(index) +
                   " entries, its header says " + std::to_string(header.entry_count) + " (truncated or padded)");
  if (heads.size() != header.checkpoint_count)
    return failure("checkpoint " + std::to_string(heads.size()) + ": export holds " + std::to_string(heads.size()) +
                   " checkpoints, its header says " + std::to_string(header.checkpoint_count));
  for (std::size_t j = 0; j < heads.size(); ++j) {
    const SignedHead& h = heads[j];
    if (h.size > index)
      return failure("entry " + std::to_string(index) + ": checkpoint " + std::to_string(j) + " covers " +
                     std::to_string(h.size) + " entries but only " + std::to_string(index) +
                     " are present (entries removed from the end)");
    if (h.state != SignedHead::State::matched)
      return failure("entry " + std::to_string(h.size == 0 ? 0 : h.size - 1) + ": altered (checkpoint " +
                     std::to_string(j) + " root does not match the entries)");
  }
  if (heads.empty() && index > 0) return failure("entry 0: no signed checkpoint covers the entries");
  if (!heads.empty() && heads.back().size < index)
    return failure("entry " + std::to_string(heads.back().size) + ": not covered by any signed checkpoint");
  if (trusted) {
    if (trusted->size > index)
      return failure("entry " + std::to_string(index) + ": the export holds " + std::to_string(index) +
                     " entries, fewer than the trusted checkpoint's " + std::to_string(trusted->size) +
                     " (entries removed from the end)");
    if (trusted->size > 0 && trusted->state != SignedHead::State::matched)
      return failure("entry " + std::to_string(trusted->size - 1) +
                     ": altered (the export is not consistent with the trusted checkpoint of size " +
                     std::to_string(trusted->size) + ")");
  }
  if (index == 0 && !options.allow_empty)
    return failure("header: the export holds no entries (an empty log verifies only with --allow-empty)");
  VerifyResult ok;
  ok.ok = true;
  ok.entries = index;
  ok.checkpoints = heads.size();
  const Hash final_root = heads.empty() ? empty_root() : heads.back().root;
  ok.size = index;
  ok.root_hex = to_hex(final_root);
  ok.summary = "ok: entries=" + std::to_string(index) + " checkpoints=" + std::to_string(heads.size()) +
               " size=" + std::to_string(index) + " root=" + ok.root_hex;
  return ok;
}

VerifyResult verify_consistency_files(std::istream& older, std::istream& newer, std::string_view vkey) {
  // The older side: an export (its last checkpoint) or one signed note.
  char magic[kExportMagic.size()] = {};
  older.read(magic, static_cast<std::streamsize>(sizeof magic));
  const bool is_export = older.gcount() == static_cast<std::streamsize>(sizeof magic) &&
                         std::string_view(magic, sizeof magic) == kExportMagic;
  older.clear();
  older.seekg(0);
  std::string trusted_note;
  if (is_export) {
    VerifyOptions o;
    o.allow_empty = true;
    const VerifyResult old_result = verify_export(older, vkey, o);
    if (!old_result.ok) return failure("OLD: " + old_result.error, old_result.integrity);
    // Its last signed checkpoint is what the newer export must extend.
    older.clear();
    older.seekg(0);
    std::string last;
    ExportVisitor v;
    v.on_checkpoint = [&](std::string_view note) {
      last.assign(note);
      return true;
    };
    v.on_entry = [](std::span<const std::uint8_t>) { return false; };  // checkpoints come first
    std::string error;
    read_export(older, v, error);
    if (last.empty()) return failure("OLD: holds no signed checkpoint");
    trusted_note = std::move(last);
  } else {
    // One note: at most a few KiB; a larger file is not one.
    std::string text(64 << 10, '\0');
    older.read(text.data(), static_cast<std::streamsize>(text.size()));
    text.resize(static_cast<std::size_t>(older.gcount()));
    if (older.peek() != std::char_traits<char>::eof()) return failure("OLD: neither an export nor a checkpoint");
    trusted_note = text;
  }
  VerifyOptions o;
  o.trusted_checkpoint = trusted_note;
  o.allow_empty = true;
  VerifyResult r = verify_export(newer, vkey, o);
  if (!r.ok) return failure("NEW: " + r.error, r.integrity);
  Checkpoint cp;
  try {
    cp = parse_and_verify_checkpoint_vkey(note_of(trusted_note), vkey);
  } catch (const std::exception& e) {
    return failure(std::string("OLD: ") + e.what());
  }
  r.summary = "ok: NEW (size " + std::to_string(r.size) + " root=" + r.root_hex + ") extends OLD (size " +
              std::to_string(cp.size) + " root=" + to_hex(cp.root) + ")";
  return r;
}

// ---- Inclusion bundles and access packages --------------------------------

namespace {

using nlohmann::json;

// What one verified bundle showed.
struct BundleFacts {
  std::uint64_t index = 0, tree_size = 0;
  Hash root{};
  bool membership = false;  // a version-2 entry's opening verified
  bool withheld = false;    // the entry's bytes were withheld (leaf hash only)
  std::set<std::string> concerns;  // the subjects it is proven to concern
};

std::optional<std::uint64_t> unsigned_of(const json& j, const char* key) {
  const auto it = j.find(key);
  if (it == j.end() || !it->is_number_unsigned()) return std::nullopt;
  return it->get<std::uint64_t>();
}

std::optional<std::string> string_of(const json& j, const char* key) {
  const auto it = j.find(key);
  if (it == j.end() || !it->is_string()) return std::nullopt;
  return it->get<std::string>();
}

// Strict lowercase-or-uppercase hex of exactly n bytes.
template <std::size_t N>
bool hex_bytes(const std::string& text, std::array<std::uint8_t, N>& out) {
  if (text.size() != 2 * N) return false;
  const auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  for (std::size_t i = 0; i < N; ++i) {
    const int hi = nibble(text[2 * i]), lo = nibble(text[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    out[i] = static_cast<std::uint8_t>(hi << 4 | lo);
  }
  return true;
}

bool hash_list(const json& j, const char* key, std::size_t max, std::vector<Hash>& out) {
  const auto it = j.find(key);
  if (it == j.end() || !it->is_array() || it->size() > max) return false;
  for (const auto& h : *it) {
    Hash parsed;
    if (!h.is_string() || !hex_bytes(h.get_ref<const std::string&>(), parsed)) return false;
    out.push_back(parsed);
  }
  return true;
}

// Verifies one bundle (FORMAT.md §5); `last_note` caches the last checkpoint
// verified, as a package proves all its entries against one.
std::optional<std::string> check_bundle(const json& b, const VerifierKey& key, std::string& last_note,
                                        Checkpoint& last_cp, BundleFacts& facts) {
  if (!b.is_object()) return "bundle: not the expected JSON document";
  const auto index = unsigned_of(b, "index");
  const auto size = unsigned_of(b, "tree_size");
  const auto note = string_of(b, "checkpoint");
  std::vector<Hash> proof;
  if (!index || !size || !note) return "bundle: not the expected JSON document";
  if (!hash_list(b, "proof", 64, proof)) return "bundle: a proof hash is not 64 hex digits";
  const auto entry_text = string_of(b, "entry");
  const auto leaf_text = string_of(b, "leaf_hash");
  std::optional<std::vector<std::uint8_t>> entry;
  Hash leaf{};
  if (entry_text) {
    entry = base64_decode(*entry_text);
    if (!entry) return "bundle: 'entry' is not base64";
    if (entry->size() > kMaxEntryBytes) return "bundle: 'entry' is larger than any entry";
  } else if (!leaf_text || !hex_bytes(*leaf_text, leaf)) {
    return "bundle: not the expected JSON document";
  }
  if (*note != last_note) {
    try {
      last_cp = parse_and_verify_checkpoint(*note, key);
    } catch (const std::exception& e) {
      return std::string(e.what());
    }
    last_note = *note;
  }
  if (last_cp.size != *size) return "bundle: checkpoint size does not match tree_size";
  facts = {};
  facts.index = *index;
  facts.tree_size = *size;
  facts.root = last_cp.root;
  const std::string at = "entry " + std::to_string(*index) + ": ";
  const auto membership = b.find("membership");
  const bool has_membership = membership != b.end() && !membership->is_null();
  if (entry) {
    EntryView view;
    const char* why = nullptr;
    if (!parse_view(*entry, view, &why)) return std::string("entry: malformed (") + why + ")";
    if (view.seq != *index) return std::string("entry: its sequence number is not the proven index");
    leaf = leaf_hash(*entry);
    if (is_subject_id(view.subject_id)) facts.concerns.insert(std::string(view.subject_id));
    if (view.version == kEntryVersion) {
      if (has_membership) return at + "a membership for an entry that lists its subjects";
      for (const auto id : list_items(view.subject_list)) facts.concerns.insert(std::string(id));
    } else if (has_membership) {
      const json& m = *membership;
      Membership opened;
      const auto sid = m.is_object() ? string_of(m, "subject_id") : std::nullopt;
      const auto salt = m.is_object() ? string_of(m, "salt") : std::nullopt;
      const auto mi = m.is_object() ? unsigned_of(m, "index") : std::nullopt;
      const auto mc = m.is_object() ? unsigned_of(m, "count") : std::nullopt;
      if (!sid || !salt || !mi || !mc || !hex_bytes(*salt, opened.salt) || !hash_list(m, "path", 64, opened.path))
        return at + "the subject's membership is not the expected JSON document";
      opened.subject_id = *sid;
      opened.index = *mi;
      opened.count = *mc;
      if (!verify_membership(opened, view.subject_count, view.subject_root))
        return at + "the subject's membership does not verify against the entry's subject commitment";
      facts.membership = true;
      facts.concerns.insert(opened.subject_id);
    }
  } else {
    if (has_membership) return at + "a membership without the entry it opens";
    facts.withheld = true;
  }
  if (!verify_inclusion(*index, *size, leaf, proof, last_cp.root))
    return at + "inclusion proof does not verify against the checkpoint";
  return std::nullopt;
}

}  // namespace

VerifyResult verify_inclusion_bundle(std::string_view bundle_json, std::string_view vkey) {
  VerifierKey key;
  try {
    key = parse_vkey(vkey);
  } catch (const std::exception& e) {
    return failure(e.what());
  }
  if (bundle_json.size() > (std::size_t{4} << 20)) return failure("bundle: larger than any bundle");
  const json b = json::parse(bundle_json, nullptr, false);
  if (b.is_discarded()) return failure("bundle: not the expected JSON document");
  std::string last_note;
  Checkpoint cp;
  BundleFacts facts;
  if (auto problem = check_bundle(b, key, last_note, cp, facts)) return failure(*problem);
  VerifyResult ok;
  ok.ok = true;
  ok.entries = 1;
  ok.checkpoints = 1;
  ok.size = facts.tree_size;
  ok.root_hex = to_hex(facts.root);
  ok.summary = "ok: entry " + std::to_string(facts.index) + " is included in the signed tree of size " +
               std::to_string(facts.tree_size) + " root=" + ok.root_hex;
  return ok;
}

namespace {

// Limits of the JSON forms, checked by a streaming pre-scan before any
// parser runs: nesting, and the longest string (the lexer holds one whole).
constexpr std::size_t kMaxDepth = 64;
constexpr std::size_t kMaxString = std::size_t{8} << 20;
constexpr std::size_t kMaxBundleBytes = std::size_t{1} << 20;

std::optional<std::string> prescan(std::istream& in) {
  // 64 KiB reads: a streaming scan gains nothing from larger ones, and a
  // small bundle is not charged for zeroing a megabyte it never reads.
  std::vector<char> buf(std::size_t{64} << 10);
  std::size_t depth = 0, string_len = 0;
  bool in_string = false, escaped = false;
  for (;;) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    const auto got = static_cast<std::size_t>(in.gcount());
    if (got == 0) break;
    for (std::size_t i = 0; i < got; ++i) {
      const char c = buf[i];
      if (in_string) {
        if (++string_len > kMaxString) return "a string longer than " + std::to_string(kMaxString) + " bytes";
        if (escaped) escaped = false;
        else if (c == '\\') escaped = true;
        else if (c == '"') in_string = false;
      } else if (c == '"') {
        in_string = true;
        string_len = 0;
      } else if (c == '[' || c == '{') {
        if (++depth > kMaxDepth) return "nested deeper than " + std::to_string(kMaxDepth) + " levels";
      } else if ((c == ']' || c == '}') && depth > 0) {
        --depth;
      }
    }
  }
  return std::nullopt;
}

// SAX handler: builds a DOM only for each access-log bundle (one at a time,
// bounded) and the few strings the package check needs; skips the rest (the
// subject's fields, touchpoints, CSV) without keeping it.
class PackageHandler : public nlohmann::json_sax<json> {
 public:
  std::function<bool(json&)> on_bundle;  // false stops the parse
  std::optional<std::string> problem;
  std::optional<std::string> subject_id;    // subject.id, or access_log.subject_id
  std::optional<std::string> package_note;  // access_log.checkpoint
  json top = json::object();                // a lone bundle's members, if the document is one
  bool saw_entries = false;

  bool null() override { return scalar(json(nullptr)); }
  bool boolean(bool v) override { return scalar(json(v)); }
  bool number_integer(number_integer_t v) override { return scalar(json(v)); }
  bool number_unsigned(number_unsigned_t v) override { return scalar(json(v)); }
  bool number_float(number_float_t v, const string_t&) override { return scalar(json(v)); }
  bool binary(binary_t&) override { return scalar(json(nullptr)); }
  bool string(string_t& v) override {
    if (skip_level_ || skip_next_) return scalar(json(nullptr));
    if (!ref_.empty()) return scalar(json(v));
    if (open_.size() == 2 && open_[1].key == "subject" && key_ == "id") subject_id = v;
    if (open_.size() == 2 && open_[1].key == "access_log" && key_ == "subject_id") subject_id = v;
    if (open_.size() == 2 && open_[1].key == "access_log" && key_ == "checkpoint") package_note = v;
    if (in_entries_array() || lone_bundle_member()) return scalar(json(v));
    return true;  // not kept (and not copied)
  }
  bool key(string_t& k) override {
    if (skip_level_) return true;
    if (ref_.size() == 1 && building_bundle_ && k == "decoded") skip_next_ = true;  // informative only
    key_ = k;
    return true;
  }
  bool start_object(std::size_t) override { return start(json::object()); }
  bool start_array(std::size_t) override { return start(json::array()); }
  bool end_object() override { return end(); }
  bool end_array() override { return end(); }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) override {
    if (!problem) problem = "bundle: not the expected JSON document";
    return false;
  }

 private:
  struct Open {
    std::string key;  // its key in its parent ("" in an array, or the root)
    bool array = false;
  };
  static bool is_bundle_key(const std::string& k) {
    return k == "entry" || k == "index" || k == "tree_size" || k == "proof" || k == "checkpoint" ||
           k == "membership" || k == "leaf_hash";
  }
  // Outside a bundle: whether the innermost open container is the package's entries array.
  bool in_entries_array() const {
    if (open_.empty() || !open_.back().array) return false;
    return (open_.size() == 2 && open_[1].key == "entries") ||
           (open_.size() == 3 && open_[1].key == "access_log" && open_[2].key == "entries");
  }
  bool lone_bundle_member() const { return open_.size() == 1 && !open_[0].array && is_bundle_key(key_); }

  bool account(const json& v) {
    bytes_ += 16 + (v.is_string() ? v.get_ref<const std::string&>().size() : 0);
    if (bytes_ <= kMaxBundleBytes) return true;
    problem = "bundle: larger than any bundle";
    return false;
  }
  json* place(json v) {
    json& parent = *ref_.back();
    if (parent.is_array()) {
      parent.push_back(std::move(v));
      return &parent.back();
    }
    json& slot = parent[key_];
    slot = std::move(v);
    return &slot;
  }
  bool scalar(json v) {
    if (skip_level_) return true;
    if (skip_next_) {
      skip_next_ = false;
      return true;
    }
    if (!ref_.empty()) {
      if (!account(v)) return false;
      place(std::move(v));
      return true;
    }
    if (in_entries_array()) {  // an entry that is not an object: checked (and refused) as a bundle
      saw_entries = true;
      return on_bundle(v);
    }
    if (lone_bundle_member()) top[key_] = std::move(v);
    return true;
  }
  bool start(json container) {
    if (skip_level_) return ++skip_level_, true;
    if (skip_next_) {
      skip_next_ = false;
      skip_level_ = 1;
      return true;
    }
    if (!ref_.empty()) {
      if (!account(container)) return false;
      ref_.push_back(place(std::move(container)));
      return true;
    }
    if (in_entries_array()) {
      saw_entries = true;
      building_bundle_ = true;
      bytes_ = 0;
      bundle_ = std::move(container);
      ref_.push_back(&bundle_);
      return true;
    }
    if (lone_bundle_member()) {
      bytes_ = 0;
      top[key_] = std::move(container);
      ref_.push_back(&top[key_]);
      return true;
    }
    open_.push_back({open_.empty() || open_.back().array ? std::string() : key_, container.is_array()});
    key_.clear();
    return true;
  }
  bool end() {
    if (skip_level_) return --skip_level_, true;
    if (!ref_.empty()) {
      ref_.pop_back();
      if (ref_.empty() && building_bundle_) {
        building_bundle_ = false;
        const bool go = on_bundle(bundle_);
        bundle_ = nullptr;
        return go;
      }
      return true;
    }
    if (!open_.empty()) open_.pop_back();
    return true;
  }

  std::vector<Open> open_;  // containers outside any bundle, from the root
  std::vector<json*> ref_;  // containers of the DOM being built
  json bundle_;
  std::string key_;
  std::size_t skip_level_ = 0, bytes_ = 0;
  bool skip_next_ = false, building_bundle_ = false;
};

}  // namespace

VerifyResult verify_package(std::istream& in, std::string_view vkey) {
  VerifierKey key;
  try {
    key = parse_vkey(vkey);
  } catch (const std::exception& e) {
    return failure(e.what());
  }
  if (auto limit = prescan(in)) return failure("bundle: not the expected JSON document (" + *limit + ")");
  in.clear();
  in.seekg(0);
  std::string last_note;
  Checkpoint cp;
  std::uint64_t bundles = 0, memberships = 0, withheld = 0;
  std::optional<std::set<std::string>> common;  // subjects every bundle so far concerns
  PackageHandler h;
  h.on_bundle = [&](json& b) {
    BundleFacts facts;
    if (auto problem = check_bundle(b, key, last_note, cp, facts)) {
      h.problem = *problem;
      return false;
    }
    ++bundles;
    memberships += facts.membership;
    withheld += facts.withheld;
    if (facts.withheld) return true;  // proves inclusion only, no subject
    if (!common) {
      common = std::move(facts.concerns);
    } else {
      std::set<std::string> both;
      std::set_intersection(common->begin(), common->end(), facts.concerns.begin(), facts.concerns.end(),
                            std::inserter(both, both.end()));
      *common = std::move(both);
    }
    if (common->empty()) {
      h.problem = "entry " + std::to_string(facts.index) +
                  ": does not show that it concerns the subject of the package's other entries";
      return false;
    }
    return true;
  };
  bool parsed = false;
  try {
    parsed = json::sax_parse(in, &h, json::input_format_t::json, true);
  } catch (const std::exception&) {
    parsed = false;
  }
  if (h.problem) return failure(*h.problem);
  if (!parsed) return failure("bundle: not the expected JSON document");
  if (!h.saw_entries) {
    // Not a package: one bundle.
    BundleFacts facts;
    if (auto problem = check_bundle(h.top, key, last_note, cp, facts)) return failure(*problem);
    VerifyResult ok;
    ok.ok = true;
    ok.entries = 1;
    ok.checkpoints = 1;
    ok.size = facts.tree_size;
    ok.root_hex = to_hex(facts.root);
    ok.summary = "ok: entry " + std::to_string(facts.index) + " is included in the signed tree of size " +
                 std::to_string(facts.tree_size) + " root=" + ok.root_hex +
                 (facts.membership ? " (subject membership verified)" : "");
    return ok;
  }
  if (h.package_note) {
    try {
      cp = parse_and_verify_checkpoint(*h.package_note, key);
    } catch (const std::exception& e) {
      return failure(std::string("package: ") + e.what());
    }
  }
  std::string subject = h.subject_id.value_or("");
  if (common) {
    if (!subject.empty() && !common->count(subject))
      return failure("package: its entries do not concern subject " + subject.substr(0, 64));
    if (subject.empty() && common->size() == 1) subject = *common->begin();
  }
  VerifyResult ok;
  ok.ok = true;
  ok.entries = bundles;
  ok.checkpoints = 1;
  ok.size = cp.size;
  ok.root_hex = to_hex(cp.root);
  ok.summary = "ok: access package of subject " + (subject.empty() ? std::string("(unnamed)") : subject) +
               ": entries=" + std::to_string(bundles) + " memberships=" + std::to_string(memberships) +
               " withheld=" + std::to_string(withheld) + " size=" + std::to_string(cp.size) + " root=" + ok.root_hex;
  return ok;
}

}  // namespace custos::auditfmt
