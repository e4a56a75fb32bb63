// The audit log's subject index in sorted runs: subject_runs.h.
#include "subject_runs.h"

#include <algorithm>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "custos/audit/blocks.h"
#include "custos/error.h"
#include "custos_audit/subjects.h"

namespace custos::audit::detail {
namespace {

using store::Row;
using store::Transaction;
using Ref = std::array<std::uint8_t, kRefBytes>;
using Id = std::array<std::uint8_t, 16>;

// A subject id as the log records it (32 lowercase hex digits) as 16 bytes.
std::optional<Id> id_bytes(std::string_view hex) {
  if (!auditfmt::is_subject_id(hex)) return std::nullopt;
  const auto nibble = [](char c) { return static_cast<std::uint8_t>(c <= '9' ? c - '0' : c - 'a' + 10); };
  Id out{};
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = static_cast<std::uint8_t>(nibble(hex[2 * i]) << 4 | nibble(hex[2 * i + 1]));
  return out;
}

Ref make_ref(const Id& id, std::uint64_t seq) {
  Ref r{};
  std::memcpy(r.data(), id.data(), id.size());
  for (int i = 0; i < 8; ++i) r[16 + i] = static_cast<std::uint8_t>(seq >> (56 - 8 * i));
  return r;
}

std::uint64_t seq_of(const std::uint8_t* ref) {
  std::uint64_t seq = 0;
  for (int i = 0; i < 8; ++i) seq = seq << 8 | ref[16 + i];
  return seq;
}

// Ref order (byte order) in three word comparisons: ids are random, so the
// first word almost always decides (memcmp was a tenth of a run's merge).
std::uint64_t word_at(const Ref& r, std::size_t at) {
  std::uint64_t w;
  std::memcpy(&w, r.data() + at, sizeof w);
  return __builtin_bswap64(w);
}
bool ref_less(const Ref& a, const Ref& b) {
  for (std::size_t at = 0; at < kRefBytes; at += 8)
    if (const std::uint64_t x = word_at(a, at), y = word_at(b, at); x != y) return x < y;
  return false;
}

Error malformed(const char* what) { return Error(ErrorCode::integrity, std::string("audit log: stored subject index is malformed (") + what + ")"); }

// The refs of a stored row, checked for size and order (a run that is not
// sorted would hide refs from the search rather than fail it).
std::span<const Ref> refs_of(store::Blob blob) {
  if (blob.size() % kRefBytes != 0) throw malformed("a run's length is not a whole number of refs");
  const std::span<const Ref> refs(reinterpret_cast<const Ref*>(blob.data()), blob.size() / kRefBytes);
  if (std::adjacent_find(refs.begin(), refs.end(), [](const Ref& a, const Ref& b) { return !ref_less(a, b); }) != refs.end())
    throw malformed("a run is not in order");
  return refs;
}

std::vector<std::uint8_t> bytes_of(std::span<const Ref> refs) {
  std::vector<std::uint8_t> out(refs.size() * kRefBytes);
  if (!refs.empty()) std::memcpy(out.data(), refs.data(), out.size());
  return out;
}

// Each entry's subjects, as refs (unsorted; duplicates possible).
std::vector<Ref> refs_of_block(Transaction& tx, std::span<const auditfmt::EntryView> entries) {
  std::vector<Ref> refs;
  refs.reserve(entries.size());
  const auto add = [&](std::string_view hex, std::uint64_t seq) {
    if (const auto id = id_bytes(hex)) refs.push_back(make_ref(*id, seq));
  };
  bool commits = false;
  for (const auto& v : entries) {
    add(v.subject_id, v.seq);
    if (v.subject_list.size() > 4)  // more than an empty list's count
      for (const std::string_view id : auditfmt::list_items(v.subject_list)) add(id, v.seq);
    commits = commits || (v.version == auditfmt::kEntryVersionCommitted && v.subject_count > 0);
  }
  if (commits && !entries.empty()) {  // their ids are kept beside them (AuditLog::add_leaf wrote them)
    tx.exec("SELECT seq, openings FROM audit_subject_openings WHERE seq >= ? AND seq <= ?",
            {static_cast<std::int64_t>(entries.front().seq), static_cast<std::int64_t>(entries.back().seq)},
            [&](const Row& r) {
              std::vector<std::string> ids;
              std::vector<auditfmt::SubjectSalt> salts;
              const char* why = nullptr;
              if (!auditfmt::decode_openings(r.blob(1), ids, salts, &why))
                throw Error(ErrorCode::integrity, std::string("audit log: stored subject openings are malformed: ") + why);
              for (const auto& id : ids) add(id, static_cast<std::uint64_t>(r.integer(0)));
            });
  }
  return refs;
}

// Calls fn(seq) for the refs of `id` in `refs` from `from` on; false if fn stopped.
bool visit(std::span<const Ref> refs, const Ref& from, const Id& id, const std::function<bool(std::uint64_t)>& fn) {
  for (auto it = std::lower_bound(refs.begin(), refs.end(), from, ref_less);
       it != refs.end() && std::memcmp(it->data(), id.data(), id.size()) == 0; ++it)
    if (!fn(seq_of(it->data()))) return false;
  return true;
}

}  // namespace

std::uint64_t subject_runs_start(Transaction& tx) {
  const auto first = tx.scalar("SELECT first_seq FROM audit_subject_runs_start");
  if (!first || *first < 0) throw Error(ErrorCode::integrity, "audit log: where the subject runs begin is not recorded");
  return static_cast<std::uint64_t>(*first);
}

void index_block_subjects(Transaction& tx, std::uint64_t block, std::span<const auditfmt::EntryView> entries,
                          std::uint64_t blocks_per_run, OpenRun* known) {
  std::vector<Ref> refs = refs_of_block(tx, entries);
  std::sort(refs.begin(), refs.end(), ref_less);
  refs.erase(std::unique(refs.begin(), refs.end()), refs.end());
  // The blocks before this one that wait for their run: rows from the open
  // run's first block on, every one of them.
  std::int64_t open_run = -1, waiting = 0;
  if (known != nullptr && known->first_block >= 0) {
    open_run = known->first_block;
    waiting = known->blocks;
  } else {
    std::int64_t first_waiting = -1;
    tx.exec("SELECT (SELECT open_run FROM audit_subject_runs_start), count(*), min(block) FROM audit_block_subjects",
            {}, [&](const Row& r) {
              if (!r.is_null(0)) open_run = r.integer(0);
              waiting = r.integer(1);
              if (!r.is_null(2)) first_waiting = r.integer(2);
            });
    if (open_run < 0) throw Error(ErrorCode::integrity, "audit log: where the subject runs begin is not recorded");
    if (waiting > 0 && first_waiting != open_run) throw malformed("a block of the open run has no row");
  }
  if (waiting != static_cast<std::int64_t>(block) - open_run) throw malformed("a block of the open run has no row");
  if (static_cast<std::uint64_t>(waiting) + 1 < std::max<std::uint64_t>(blocks_per_run, 1)) {
    // Deferred (no outcome is read): on PostgreSQL it travels with the next statement.
    tx.exec_deferred("INSERT INTO audit_block_subjects (block, refs) VALUES (?, ?)",
                     {static_cast<std::int64_t>(block), bytes_of(refs)});
    if (known != nullptr) *known = {open_run, waiting + 1};
    return;
  }
  if (known != nullptr) *known = {static_cast<std::int64_t>(block) + 1, 0};
  // The run is complete: its blocks' refs, merged (each block's are sorted
  // and a later block's seqs are larger, so a sort of the concatenation).
  if (waiting > 0) {
    std::vector<Ref> merged;
    merged.reserve(static_cast<std::size_t>(waiting + 1) * kBlockEntries);
    tx.exec("SELECT refs FROM audit_block_subjects ORDER BY block", {}, [&](const Row& r) {
      const auto stored = refs_of(r.blob(0));
      merged.insert(merged.end(), stored.begin(), stored.end());
    });
    merged.insert(merged.end(), refs.begin(), refs.end());
    std::sort(merged.begin(), merged.end(), ref_less);
    refs = std::move(merged);
    tx.exec("DELETE FROM audit_block_subjects");
  }
  const std::int64_t first = open_run;
  tx.exec("UPDATE audit_subject_runs_start SET open_run = ?", {static_cast<std::int64_t>(block) + 1});
  static constexpr std::array<std::string_view, 3> kColumns = {"first_block", "first_ref", "refs"};
  std::vector<std::vector<std::uint8_t>> chunks;
  chunks.reserve(refs.size() / kChunkRefs + 1);
  std::vector<store::Param> rows;
  rows.reserve(3 * (refs.size() / kChunkRefs + 1));
  for (std::size_t at = 0; at < refs.size(); at += kChunkRefs) {
    const std::span<const Ref> chunk(refs.data() + at, std::min(kChunkRefs, refs.size() - at));
    chunks.push_back(bytes_of(chunk));
    rows.emplace_back(first);
    rows.emplace_back(store::Blob(chunks.back().data(), kRefBytes));
    rows.emplace_back(chunks.back());
  }
  if (!rows.empty()) tx.bulk_insert("audit_subject_runs", kColumns, rows);
}

bool find_subject_in_runs(Transaction& tx, std::string_view subject_id, std::uint64_t from_seq,
                          const std::function<bool(std::uint64_t)>& fn) {
  const auto id = id_bytes(subject_id);
  if (!id) return true;  // not an id the log indexes
  const Ref from = make_ref(*id, from_seq);
  const Ref last = make_ref(*id, ~std::uint64_t{0});
  const auto from_block = static_cast<std::int64_t>(from_seq / kBlockEntries);
  // The runs, from the one holding from_seq's block: in each, the chunk that
  // may hold `from`, then every chunk that begins with the subject.
  std::optional<std::int64_t> run = tx.scalar("SELECT max(first_block) FROM audit_subject_runs WHERE first_block <= ?", {from_block});
  if (!run) run = tx.scalar("SELECT min(first_block) FROM audit_subject_runs");
  const Ref none{};  // no ref sorts before it
  while (run) {
    bool more = true;
    tx.exec("SELECT refs FROM audit_subject_runs WHERE first_block = ? AND first_ref >= coalesce("
            "(SELECT max(first_ref) FROM audit_subject_runs WHERE first_block = ? AND first_ref <= ?), ?)"
            " AND first_ref <= ? ORDER BY first_ref",
            {*run, *run, from, none, last}, [&](const Row& r) {
              if (more) more = visit(refs_of(r.blob(0)), from, *id, fn);
            });
    if (!more) return false;
    run = tx.scalar("SELECT min(first_block) FROM audit_subject_runs WHERE first_block > ?", {*run});
  }
  // The completed blocks of the open run.
  bool more = true;
  tx.exec("SELECT refs FROM audit_block_subjects WHERE block >= ? ORDER BY block", {from_block}, [&](const Row& r) {
    if (more) more = visit(refs_of(r.blob(0)), from, *id, fn);
  });
  return more;
}

}  // namespace custos::audit::detail
