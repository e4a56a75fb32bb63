#include "custos/audit/audit_log.h"

#include <sodium.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <limits>
#include <map>
#include <optional>
#include <memory>
#include <string_view>
#include <tuple>
#include <vector>

#include "custos/audit/blocks.h"
#include "custos/error.h"
#include "custos/store/key_table.h"
#include "entry_store.h"
#include "subject_runs.h"
#include "custos_audit/checkpoint.h"
#include "custos_audit/export.h"
#include "custos_audit/subjects.h"

namespace custos::audit {
namespace {

using detail::EntryReader;
using detail::kPostOperation;
using detail::kPostPrincipal;
using detail::kPostPurpose;
using store::Row;
using store::Transaction;
using store::TxMode;

std::int64_t system_now_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

Hash to_hash(store::Blob b) {
  Hash h{};
  if (b.size() != h.size()) throw Error(ErrorCode::integrity, "audit log: stored hash has the wrong length");
  std::copy(b.begin(), b.end(), h.begin());
  return h;
}

// Runs `fn`, turning any storage failure into audit_unavailable: the log is
// the thing that could not be written, and callers must fail closed.
template <typename Fn>
auto fail_closed(Fn&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const Error& e) {
    if (e.code() == ErrorCode::storage || e.code() == ErrorCode::conflict)
      throw Error(ErrorCode::audit_unavailable, std::string("audit log cannot be written: ") + e.what());
    throw;
  }
}

}  // namespace

namespace {
// Days since 1970-01-01 of a proleptic Gregorian date, and back (H. Hinnant's
// algorithms): pure arithmetic, so neither direction takes libc's time-zone
// lock, which every audited read would otherwise contend on.
std::int64_t days_from_civil(std::int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const std::int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<std::int64_t>(doe) - 719468;
}

void civil_from_days(std::int64_t z, std::int64_t& y, unsigned& m, unsigned& d) {
  z += 719468;
  const std::int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const unsigned doe = static_cast<unsigned>(z - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  d = doy - (153 * mp + 2) / 5 + 1;
  m = mp < 10 ? mp + 3 : mp - 9;
  y = static_cast<std::int64_t>(yoe) + era * 400 + (m <= 2);
}

unsigned days_in_month(std::int64_t y, unsigned m) {
  static constexpr unsigned kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  const bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
  return m == 2 && leap ? 29 : kDays[m - 1];
}

// Reads exactly `n` decimal digits at s[pos]; false if any is not a digit.
bool digits(std::string_view s, std::size_t pos, std::size_t n, int& out) {
  if (pos + n > s.size()) return false;
  out = 0;
  for (std::size_t i = pos; i < pos + n; ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
    out = out * 10 + (s[i] - '0');
  }
  return true;
}
}  // namespace

std::string format_time_us(std::int64_t unix_us) {
  // Floor division without negating (every int64 is a time, INT64_MIN too).
  const std::int64_t secs = unix_us / 1000000 - (unix_us % 1000000 < 0 ? 1 : 0);
  const std::int64_t days = secs / 86400 - (secs % 86400 < 0 ? 1 : 0);
  std::int64_t y;
  unsigned m, d;
  civil_from_days(days, y, m, d);
  const std::int64_t sod_rem = secs % 86400, micros_rem = unix_us % 1000000;  // remainders: no product overflows
  const auto sod = static_cast<unsigned>(sod_rem < 0 ? sod_rem + 86400 : sod_rem);
  const auto micros = static_cast<unsigned>(micros_rem < 0 ? micros_rem + 1000000 : micros_rem);
  if (y < 0 || y > 9999) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%04lld-%02u-%02uT%02u:%02u:%02u.%06uZ", static_cast<long long>(y), m, d,
                  sod / 3600, sod / 60 % 60, sod % 60, micros);
    return buf;
  }
  // Every audited read formats a time: digits by hand, not snprintf.
  std::string out = "0000-00-00T00:00:00.000000Z";
  const auto put = [&out](std::size_t at, unsigned width, unsigned v) {
    for (std::size_t i = at + width; i-- > at; v /= 10) out[i] = static_cast<char>('0' + v % 10);
  };
  put(0, 4, static_cast<unsigned>(y));
  put(5, 2, m);
  put(8, 2, d);
  put(11, 2, sod / 3600);
  put(14, 2, sod / 60 % 60);
  put(17, 2, sod % 60);
  put(20, 6, micros);
  return out;
}

std::optional<std::int64_t> parse_time_us(std::string_view s) {
  // YYYY-MM-DD(T|t| )HH:MM:SS[.f+](Z|z|+HH:MM|-HH:MM)
  int y, mo, d, h, mi, sec;
  if (s.size() < 20 || !digits(s, 0, 4, y) || s[4] != '-' || !digits(s, 5, 2, mo) || s[7] != '-' ||
      !digits(s, 8, 2, d) || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') || !digits(s, 11, 2, h) ||
      s[13] != ':' || !digits(s, 14, 2, mi) || s[16] != ':' || !digits(s, 17, 2, sec))
    return std::nullopt;
  if (mo < 1 || mo > 12 || d < 1 || static_cast<unsigned>(d) > days_in_month(y, static_cast<unsigned>(mo)) ||
      h > 23 || mi > 59 || sec > 60)
    return std::nullopt;
  std::size_t pos = 19;
  std::int64_t micros = 0;
  if (pos < s.size() && s[pos] == '.') {
    ++pos;
    int n = 0;
    for (; pos < s.size() && s[pos] >= '0' && s[pos] <= '9'; ++pos, ++n)
      if (n < 6) micros = micros * 10 + (s[pos] - '0');
    if (n == 0) return std::nullopt;
    for (; n < 6; ++n) micros *= 10;
  }
  std::int64_t offset_s = 0;
  if (pos < s.size() && (s[pos] == 'Z' || s[pos] == 'z')) {
    ++pos;
  } else if (pos + 6 == s.size() && (s[pos] == '+' || s[pos] == '-') && s[pos + 3] == ':') {
    int oh, om;
    if (!digits(s, pos + 1, 2, oh) || !digits(s, pos + 4, 2, om) || oh > 23 || om > 59) return std::nullopt;
    offset_s = (oh * 3600 + om * 60) * (s[pos] == '+' ? 1 : -1);
    pos += 6;
  } else {
    return std::nullopt;
  }
  if (pos != s.size()) return std::nullopt;
  const std::int64_t t = days_from_civil(y, static_cast<unsigned>(mo), static_cast<unsigned>(d)) * 86400 +
                         h * 3600 + mi * 60 + sec;
  return (t - offset_s) * 1000000 + micros;
}

std::string recorded_label(std::string_view what, std::string_view value) {
  return auditfmt::is_label(value) ? std::string(value) : auditfmt::invalid_value(what, value);
}

std::string recorded_request_id(std::string_view id) {
  if (id.empty() || auditfmt::is_request_id(id)) return std::string(id);
  // Keyed, not plain, hash: a replaced id must not let anyone confirm a
  // guess of what was sent; stable within the process, so one request's
  // entries still correlate.
  static const auto key = [] {
    std::array<unsigned char, crypto_generichash_KEYBYTES> k{};
    if (sodium_init() < 0) throw Error(ErrorCode::internal, "libsodium cannot be initialised");
    randombytes_buf(k.data(), k.size());
    return k;
  }();
  std::array<unsigned char, 16> mac{};
  crypto_generichash(mac.data(), mac.size(), reinterpret_cast<const unsigned char*>(id.data()), id.size(), key.data(),
                     key.size());
  char hex[2 * 16 + 1];
  sodium_bin2hex(hex, sizeof hex, mac.data(), mac.size());
  return hex;
}

namespace {
// A subject field holds an id, nothing, or a marker the service already made.
bool recordable_subject(std::string_view id) {
  return auditfmt::is_subject_id(id) || auditfmt::is_invalid_value("subject", id);
}
}  // namespace

std::string recorded_subject(std::string_view id) {
  return id.empty() || recordable_subject(id) ? std::string(id) : auditfmt::invalid_value("subject", id);
}

namespace {
// The log's own guard on what reaches an entry: every append, journaled or
// not, passes here, so no caller's oversight can put a megabyte purpose or
// a newline into the tamper-evident (and unrepairable) log.
void keep_to_names_and_ids(auditfmt::Entry& e) {
  for (auto [what, value] : {std::pair{"principal", &e.principal}, std::pair{"role", &e.role},
                             std::pair{"token_id", &e.token_id}, std::pair{"purpose", &e.purpose},
                             std::pair{"operation", &e.operation}, std::pair{"reason", &e.reason}})
    if (!auditfmt::is_label(*value)) *value = auditfmt::invalid_value(what, *value);
  for (auto* list : {&e.fields, &e.masked_fields})
    for (auto& name : *list)
      if (!auditfmt::is_label(name)) name = auditfmt::invalid_value("field", name);
  // Replaced only when invalid: the hot path (a campaign page names 500 ids) copies nothing.
  if (!e.subject_id.empty() && !recordable_subject(e.subject_id))
    e.subject_id = auditfmt::invalid_value("subject", e.subject_id);
  for (auto& id : e.subject_ids)
    if (!recordable_subject(id)) id = auditfmt::invalid_value("subject", id);
  if (!e.request_id.empty() && !auditfmt::is_request_id(e.request_id)) e.request_id = recorded_request_id(e.request_id);
}
}  // namespace

void AuditLog::require_fits(std::size_t bytes) {
  if (bytes > auditfmt::kMaxEntryBytes)
    throw Error(ErrorCode::invalid_argument, "the audit entry would be " + std::to_string(bytes) +
                                                 " bytes, more than the log's limit of " +
                                                 std::to_string(auditfmt::kMaxEntryBytes));
}

AuditLog::AuditLog(store::Store& store, const crypto::Signer& signer, Options options)
    : store_(store), signer_(signer), options_(std::move(options)) {
  if (!options_.now_us) options_.now_us = system_now_us;
  vkey_ = auditfmt::format_vkey(options_.key_name, signer_.public_key());
}

std::int64_t AuditLog::now_us() const { return options_.now_us(); }

std::function<Hash(unsigned, std::uint64_t)> AuditLog::subtree_fn(Transaction& tx) {
  // Subtrees inside a block are not stored: they are hashed from the
  // block's leaves, read once per block (a proof asks for up to
  // kBlockLevel - 1 of them, all in the block of its leaf or its neighbour).
  struct BlockLeaves {
    std::unique_ptr<EntryReader> reader;  // made at the first block asked for
    std::uint64_t block = ~std::uint64_t{0};
    std::vector<Hash> leaves;
  };
  auto cache = std::make_shared<BlockLeaves>();
  return [&tx, cache](unsigned level, std::uint64_t index) {
    const auto missing = [&] {
      return Error(ErrorCode::integrity, "audit log: subtree hash (" + std::to_string(level) + ", " +
                                             std::to_string(index) + ") is missing");
    };
    std::optional<Hash> out;
    if (level >= kBlockLevel) {
      tx.exec("SELECT hash FROM audit_nodes WHERE level = ? AND idx = ?",
              {static_cast<std::int64_t>(level), static_cast<std::int64_t>(index)},
              [&](const Row& r) { out = to_hash(r.blob(0)); });
      if (!out) throw missing();
      return *out;
    }
    const std::uint64_t first = index << level;
    const std::uint64_t block = first / kBlockEntries;
    if (cache->block != block) {
      cache->block = ~std::uint64_t{0};
      cache->leaves.clear();
      if (!cache->reader) cache->reader = std::make_unique<EntryReader>(tx);
      cache->reader->range(block * kBlockEntries, (block + 1) * kBlockEntries,
                           [&](std::uint64_t, std::span<const std::uint8_t> entry) {
                             cache->leaves.push_back(auditfmt::leaf_hash(entry));
                             return true;
                           });
      cache->block = block;
    }
    const std::uint64_t offset = first - block * kBlockEntries;
    const std::uint64_t count = std::uint64_t{1} << level;
    if (offset + count > cache->leaves.size()) throw missing();
    std::vector<Hash> row(cache->leaves.begin() + static_cast<std::ptrdiff_t>(offset),
                          cache->leaves.begin() + static_cast<std::ptrdiff_t>(offset + count));
    for (; row.size() > 1; row.resize(row.size() / 2))
      for (std::size_t i = 0; i < row.size() / 2; ++i) row[i] = auditfmt::node_hash(row[2 * i], row[2 * i + 1]);
    return row.front();
  };
}

// How many entries appended by other writers load_head folds into the cached
// frontier leaf by leaf; beyond it, the frontier is restored from subtrees.
constexpr std::uint64_t kCatchUpLeaves = 4096;

void AuditLog::load_head(Transaction& tx) {
  EntryReader entries(tx);
  const std::uint64_t size = entries.size();
  const Hash last_leaf = entries.last_leaf().value_or(Hash{});
  if (frontier_ && frontier_->size() == size && last_leaf == last_leaf_) return;  // cache is current
  // Another writer appended (another node on a shared store, or another
  // process), or this is the first look.
  const std::optional<std::uint64_t> previous_size =
      frontier_ ? std::optional<std::uint64_t>(frontier_->size()) : std::nullopt;
  bool caught_up = false;
  if (previous_size && *previous_size > 0 && size > *previous_size && size - *previous_size <= kCatchUpLeaves) {
    // Append the others' leaves to this node's frontier: one query, where a
    // restore reads a subtree per level and a block of leaves. Only if the
    // store's leaf at our last position is our last leaf: entries chain to
    // their predecessor's leaf, so then the whole prefix is ours as cached
    // (not, for example, an append of ours that was rolled back).
    std::vector<Hash> leaves;
    leaves.reserve(size - *previous_size + 1);
    entries.range(*previous_size - 1, size, [&](std::uint64_t, std::span<const std::uint8_t> entry) {
      leaves.push_back(auditfmt::leaf_hash(entry));
      return true;
    });
    if (leaves.size() == size - *previous_size + 1 && leaves.front() == last_leaf_) {
      for (std::size_t i = 1; i < leaves.size(); ++i) frontier_->append(leaves[i]);
      caught_up = true;
    }
  }
  if (!caught_up) frontier_ = auditfmt::Frontier::restore(size, subtree_fn(tx));
  last_leaf_ = last_leaf;
  const std::int64_t bucket = tx.scalar("SELECT max(bucket) FROM audit_subject_buckets").value_or(-1);
  if (previous_size && bucket == subject_bucket_.number && size >= *previous_size) {
    // Still the bucket this node knew: the entries appended since add a row
    // each, or more (a multi-subject entry), so the bucket may end a little
    // past subject_bucket_rows. Counting it exactly scanned up to 65,536
    // index rows whenever nodes took turns, each time (issue 16, several
    // nodes on PostgreSQL); the limit only decides where buckets are cut.
    subject_bucket_.rows += size - *previous_size;
  } else {
    subject_bucket_.number = bucket;
    subject_bucket_.rows = static_cast<std::uint64_t>(
        tx.scalar("SELECT count(*) FROM audit_subject_index WHERE bucket = ?", {bucket}).value_or(0));
  }
  last_checkpoint_size_ = 0;
  tx.exec("SELECT size, at FROM audit_checkpoints ORDER BY size DESC LIMIT 1", {}, [&](const Row& r) CUSTOS_REQUIRES(mu_) {
    last_checkpoint_size_ = static_cast<std::uint64_t>(r.integer(0));
    last_checkpoint_at_us_ = r.integer(1);
  });
}

auditfmt::Entry AuditLog::draft(const Actor& actor, const Event& event, std::string time) const {
  auditfmt::Entry e;
  e.time = std::move(time);
  e.principal = actor.principal;
  e.role = actor.role;
  e.token_id = actor.token_id;
  e.purpose = actor.purpose;
  e.operation = event.operation;
  e.subject_id = event.subject_id;
  e.fields = event.fields;
  e.masked_fields = event.masked_fields;
  e.outcome = event.allowed ? "allowed" : "denied";
  e.reason = event.reason;
  e.request_id = actor.request_id;
  e.node_id = options_.node_id;
  e.detail = event.detail;
  e.subject_ids = event.subject_ids;
  keep_to_names_and_ids(e);
  return e;
}

AuditLog::Drafted AuditLog::encode_draft(const Actor& actor, const Event& event, std::string time) const {
  auditfmt::Entry e = draft(actor, event, std::move(time));
  Drafted out;
  if (!e.subject_ids.empty()) {
    // The entry commits to its further subjects (FORMAT.md §1.5); their ids
    // and salts stay with the vault, beside the entry, never in it.
    auditfmt::commit_subjects(e);
    out.openings = auditfmt::encode_openings(e);
    require_fits(out.openings.size());
  }
  out.bytes = auditfmt::encode(e);
  require_fits(out.bytes.size());
  return out;
}

namespace {
// A journal record is an entry's canonical bytes, or, for an entry that
// commits to its subjects, kWrapped || u32 length || the bytes || the
// openings: the ids must survive the journal, but are no part of the bytes.
// No canonical entry starts with kWrapped (its first byte is its version).
constexpr std::uint8_t kWrapped = 0xC5;

std::vector<std::uint8_t> journal_payload(std::vector<std::uint8_t> bytes, const std::vector<std::uint8_t>& openings) {
  if (openings.empty()) return bytes;
  std::vector<std::uint8_t> out;
  out.reserve(5 + bytes.size() + openings.size());
  const auto n = static_cast<std::uint32_t>(bytes.size());
  out.insert(out.end(), {kWrapped, static_cast<std::uint8_t>(n >> 24), static_cast<std::uint8_t>(n >> 16),
                         static_cast<std::uint8_t>(n >> 8), static_cast<std::uint8_t>(n)});
  out.insert(out.end(), bytes.begin(), bytes.end());
  out.insert(out.end(), openings.begin(), openings.end());
  return out;
}

// The canonical bytes inside a journal payload, and the openings (empty if none).
std::pair<std::span<std::uint8_t>, std::span<const std::uint8_t>> unwrap(std::span<std::uint8_t> payload) {
  if (payload.size() < 5 || payload[0] != kWrapped) return {payload, {}};
  const std::size_t n = (std::size_t{payload[1]} << 24) | (std::size_t{payload[2]} << 16) |
                        (std::size_t{payload[3]} << 8) | payload[4];
  if (n > payload.size() - 5) throw Error(ErrorCode::integrity, "audit journal: malformed wrapped record");
  return {payload.subspan(5, n), payload.subspan(5 + n)};
}
}  // namespace


struct AuditLog::Unwritten {
  std::vector<std::vector<std::uint8_t>> entries;  // the open block's, from its first without a row
  detail::OpenRun open_run;                        // the subject index's open run, once this transaction read it
};

void AuditLog::store_unwritten(Transaction& tx, Unwritten& unwritten) {
  for (const auto& bytes : unwritten.entries) {
    auditfmt::EntryView v;
    const char* why = nullptr;
    if (!auditfmt::parse_view(bytes, v, &why)) throw Error(ErrorCode::internal, std::string("audit log: malformed entry: ") + why);
    detail::write_entry_row(tx, v.seq, v, parse_time_us(v.time).value_or(0), bytes, auditfmt::leaf_hash(bytes));
  }
  unwritten.entries.clear();
}

std::uint64_t AuditLog::add_leaf(Transaction& tx, std::span<std::uint8_t> bytes,
                                 std::span<const std::uint8_t> openings, Unwritten* unwritten) {
  require_fits(bytes.size());  // before anything is written: nothing is appended
  require_fits(openings.size());
  auditfmt::Frontier next = *frontier_;
  const std::uint64_t seq = next.size();
  auditfmt::set_position(bytes, seq, seq == 0 ? Hash{} : last_leaf_);
  auditfmt::EntryView v;
  const char* why = nullptr;
  if (!auditfmt::parse_view(bytes, v, &why))
    throw Error(ErrorCode::internal, std::string("audit log: malformed entry: ") + why);
  std::vector<std::string> committed;
  if (v.version == auditfmt::kEntryVersionCommitted) {
    std::vector<auditfmt::SubjectSalt> salts;
    if (!auditfmt::decode_openings(openings, committed, salts, &why) || committed.size() != v.subject_count)
      throw Error(ErrorCode::internal, "audit log: an entry that commits to its subjects came without their openings");
  } else if (!openings.empty()) {
    throw Error(ErrorCode::internal, "audit log: subject openings for an entry that lists its subjects");
  }
  const Hash leaf = auditfmt::leaf_hash(bytes);
  next.append(leaf);
  const bool completes_block = (seq + 1) % kBlockEntries == 0;
  if (unwritten != nullptr) {
    unwritten->entries.emplace_back(bytes.begin(), bytes.end());
  } else if (!completes_block) {
    detail::write_entry_row(tx, seq, v, parse_time_us(v.time).value_or(0), bytes, leaf);
  }
  if (!openings.empty())
    tx.exec_deferred("INSERT INTO audit_subject_openings (seq, openings) VALUES (?, ?)",
            {static_cast<std::int64_t>(seq), store::Blob(openings)});
  // Entries from the runs' start are indexed when their block completes.
  const SubjectBucket bucket = seq < subject_runs_from(tx) ? index_subjects(tx, seq, v, committed) : subject_bucket_;
  for (const auto& [level, index, hash] : next.completed())
    if (level >= kBlockLevel)  // lower ones are hashed again from the block's leaves when asked for
      tx.exec_deferred("INSERT INTO audit_nodes (level, idx, hash) VALUES (?, ?, ?)",
              {static_cast<std::int64_t>(level), static_cast<std::int64_t>(index), hash});
  if (completes_block) {  // one row for the block; the rows of its entries go
    const detail::SubjectRunsAt runs{(subject_runs_from(tx) + kBlockEntries - 1) / kBlockEntries,
                                     options_.subject_run_blocks, unwritten ? &unwritten->open_run : nullptr};
    if (unwritten != nullptr) {
      const std::vector<std::span<const std::uint8_t>> tail(unwritten->entries.begin(), unwritten->entries.end());
      detail::complete_block(tx, seq / kBlockEntries, tail, runs);
      unwritten->entries.clear();
    } else {
      const std::span<const std::uint8_t> tail[] = {bytes};
      detail::complete_block(tx, seq / kBlockEntries, tail, runs);
    }
  }
  if (next.size() - last_checkpoint_size_ >= options_.checkpoint_every_entries) sign_head(tx, next.size(), next.root());
  // The cache moves ahead now, all of it or none; if the caller rolls back,
  // load_head sees the store's last leaf differ and rebuilds.
  frontier_ = std::move(next);
  last_leaf_ = leaf;
  subject_bucket_ = bucket;
  return seq;
}

std::uint64_t AuditLog::subject_runs_from(Transaction& tx) {
  if (!subject_runs_from_) subject_runs_from_ = detail::subject_runs_start(tx);
  return *subject_runs_from_;
}

AuditLog::SubjectBucket AuditLog::index_subjects(Transaction& tx, std::uint64_t seq, const auditfmt::EntryView& v,
                                                 const std::vector<std::string>& committed) {
  // Only real ids are indexed: an invalid_subject marker names no subject.
  std::vector<std::string_view> subjects;
  if (auditfmt::is_subject_id(v.subject_id)) subjects.push_back(v.subject_id);
  if (v.subject_list.size() > 4) {  // more than an empty list's count
    for (const std::string_view id : auditfmt::list_items(v.subject_list))
      if (auditfmt::is_subject_id(id)) subjects.push_back(id);
  }
  for (const std::string& id : committed)
    if (auditfmt::is_subject_id(id)) subjects.push_back(id);
  SubjectBucket at = subject_bucket_;
  if (subjects.empty()) return at;
  // An entry's rows share one bucket, so buckets stay in sequence order; a
  // new bucket records where it starts, for queries that page.
  if (at.number < 0 || at.rows >= options_.subject_bucket_rows) {
    at = {at.number + 1, 0};
    tx.exec("INSERT INTO audit_subject_buckets (bucket, first_seq) VALUES (?, ?)",
            {at.number, static_cast<std::int64_t>(seq)});
  }
  // One row per distinct subject, sent in bulk (binary COPY on PostgreSQL:
  // a 1,000-subject batch entry was 1,000 round trips). The entry's seq is
  // new (audit_entries' key), so no row for it can exist already.
  if (subjects.size() == 1) {  // most entries: one statement, no COPY on PostgreSQL
    tx.exec("INSERT INTO audit_subject_index (bucket, subject_id, seq) VALUES (?, ?, ?)",
            {at.number, subjects.front(), static_cast<std::int64_t>(seq)});
    ++at.rows;
    return at;
  }
  std::sort(subjects.begin(), subjects.end());
  subjects.erase(std::unique(subjects.begin(), subjects.end()), subjects.end());
  static constexpr std::array<std::string_view, 3> kIndexColumns = {"bucket", "subject_id", "seq"};
  std::vector<store::Param> rows;
  rows.reserve(subjects.size() * kIndexColumns.size());
  for (const std::string_view sid : subjects) {
    rows.emplace_back(at.number);
    rows.emplace_back(sid);
    rows.emplace_back(static_cast<std::int64_t>(seq));
  }
  tx.bulk_insert("audit_subject_index", kIndexColumns, rows);
  at.rows += subjects.size();
  return at;
}

std::uint64_t AuditLog::append(Transaction& tx, const Actor& actor, const Event& event) {
  return fail_closed([&] {
    if (tx.mode() != TxMode::write) throw Error(ErrorCode::internal, "audit append needs a write transaction");
    util::MutexLock lock(mu_);
    load_head(tx);
    Drafted d = encode_draft(actor, event, format_time_us(options_.now_us()));
    return add_leaf(tx, d.bytes, d.openings);
  });
}

std::uint64_t AuditLog::append_now(const Actor& actor, const Event& event) {
  return fail_closed([&] {
    auto tx = store_.begin(TxMode::write);
    const std::uint64_t seq = append(*tx, actor, event);
    tx->commit();
    return seq;
  });
}

struct AuditLog::Waiter {
  const Actor* actor;
  const std::vector<Event>* events;
  bool done = false;
  std::optional<Error> error;
};

void AuditLog::append_durable(const Actor& actor, const std::vector<Event>& events) {
  if (events.empty()) return;
  if (journal_on_.load(std::memory_order_acquire)) return append_journaled(actor, events);
  // Refused before joining the group: an oversized entry fails only its own
  // caller, not the readers whose entries would share its transaction.
  for (const Event& e : events) {
    const auditfmt::Entry sized = draft(actor, e, format_time_us(options_.now_us()));
    require_fits(auditfmt::encoded_size(sized));
    if (!sized.subject_ids.empty()) require_fits(auditfmt::openings_size(sized));
  }
  Waiter self{&actor, &events};
  util::MutexLock lock(group_mu_);
  queue_.push_back(&self);
  // Someone else is committing: our entry rides in their next transaction.
  group_cv_.wait(lock, [&]() CUSTOS_REQUIRES(group_mu_) { return self.done || !leader_active_; });
  if (self.done) {
    if (self.error) throw *self.error;
    return;
  }
  leader_active_ = true;
  while (!queue_.empty()) {
    std::vector<Waiter*> batch;
    batch.swap(queue_);
    // The pending table's rows of this group: counters and a time of their
    // own, taken in the order groups commit (one leader at a time).
    std::uint64_t first_pending = 0;
    std::int64_t pending_at = 0;
    if (pending_on_.load(std::memory_order_acquire)) {
      pending_at = pending_last_at_ = std::max(options_.now_us(), pending_last_at_);
      first_pending = pending_next_;
      for (const Waiter* w : batch) pending_next_ += w->events->size();
    }
    lock.unlock();
    std::optional<Error> failure;
    try {
      fail_closed([&] {
        if (first_pending != 0) {
          insert_pending(batch, first_pending, pending_at);
          return 0;
        }
        auto tx = store_.begin(TxMode::write);
        {
          // The head is read once for the whole group (a query, a round
          // trip on PostgreSQL), and blocks the group completes are stored
          // as one row each, as a fold stores them.
          util::MutexLock head_lock(mu_);
          load_head(*tx);
          Unwritten unwritten;
          for (Waiter* w : batch)
            for (const Event& e : *w->events) {
              Drafted d = encode_draft(*w->actor, e, format_time_us(options_.now_us()));
              add_leaf(*tx, d.bytes, d.openings, &unwritten);
            }
          store_unwritten(*tx, unwritten);
        }
        tx->commit();
        return 0;
      });
    } catch (const Error& e) {
      failure = e.code() == ErrorCode::audit_unavailable
                    ? e
                    : Error(ErrorCode::audit_unavailable, std::string("audit log cannot be written: ") + e.what());
    } catch (const std::exception&) {
      failure = Error(ErrorCode::audit_unavailable, "audit log cannot be written");
    }
    lock.lock();
    for (Waiter* w : batch) {
      w->error = failure;
      w->done = true;
    }
    group_cv_.notify_all();
  }
  leader_active_ = false;
  group_cv_.notify_all();
  if (self.error) throw *self.error;
}

Checkpoint AuditLog::sign_head(Transaction& tx, std::uint64_t size, const Hash& root) {
  Checkpoint cp;
  cp.size = size;
  cp.root = root;
  cp.at_us = options_.now_us();
  cp.note = auditfmt::sign_checkpoint(options_.origin, size, root, options_.key_name, signer_.secret_key());
  tx.exec("INSERT INTO audit_checkpoints (size, root, note, at) VALUES (?, ?, ?, ?)",
          {static_cast<std::int64_t>(size), root, cp.note, cp.at_us});
  last_checkpoint_size_ = size;
  last_checkpoint_at_us_ = cp.at_us;
  return cp;
}

Checkpoint AuditLog::checkpoint_now() {
  flush();
  return sign_folded();
}

Checkpoint AuditLog::sign_folded() {
  return fail_closed([&] {
    // Lock order everywhere: the store's write lock, then mu_ (append() is
    // called inside a caller's write transaction and then takes mu_).
    auto tx = store_.begin(TxMode::write);
    util::MutexLock lock(mu_);
    load_head(*tx);
    if (frontier_->size() > last_checkpoint_size_ || frontier_->size() == 0) {
      if (frontier_->size() == 0 && last_checkpoint_size_ == 0) {
        // The empty tree has a head too; sign it once.
        const auto existing = tx->scalar("SELECT count(*) FROM audit_checkpoints WHERE size = 0");
        if (existing.value_or(0) == 0) sign_head(*tx, 0, frontier_->root());
      } else {
        sign_head(*tx, frontier_->size(), frontier_->root());
      }
      tx->commit();
    }
    return *latest_checkpoint();
  });
}

void AuditLog::checkpoint_if_due() {
  {
    util::MutexLock lock(mu_);
    if (frontier_ && frontier_->size() == last_checkpoint_size_) return;
    if (options_.now_us() - last_checkpoint_at_us_ < options_.checkpoint_every_ms * 1000) return;
  }
  // What is folded, not the journal too: the folder's own interval decides
  // when reads' entries join the tree (each commit costs every reader its
  // page cache), and they are signed at the first tick after.
  sign_folded();
}

namespace {
Checkpoint checkpoint_from_row(const Row& r) {
  Checkpoint cp;
  cp.size = static_cast<std::uint64_t>(r.integer(0));
  cp.root = to_hash(r.blob(1));
  cp.note = std::string(r.text(2));
  cp.at_us = r.integer(3);
  return cp;
}
}  // namespace

std::optional<Checkpoint> AuditLog::latest_checkpoint() {
  std::optional<Checkpoint> out;
  auto tx = store_.begin(TxMode::read);
  tx->exec("SELECT size, root, note, at FROM audit_checkpoints ORDER BY size DESC LIMIT 1", {},
           [&](const Row& r) { out = checkpoint_from_row(r); });
  return out;
}

std::optional<Checkpoint> AuditLog::checkpoint_at(std::uint64_t size) {
  std::optional<Checkpoint> out;
  auto tx = store_.begin(TxMode::read);
  tx->exec("SELECT size, root, note, at FROM audit_checkpoints WHERE size = ?", {static_cast<std::int64_t>(size)},
           [&](const Row& r) { out = checkpoint_from_row(r); });
  return out;
}

std::vector<Checkpoint> AuditLog::checkpoints(std::uint64_t from_size, std::size_t limit) {
  std::vector<Checkpoint> out;
  auto tx = store_.begin(TxMode::read);
  tx->exec("SELECT size, root, note, at FROM audit_checkpoints WHERE size >= ? ORDER BY size LIMIT ?",
           {static_cast<std::int64_t>(from_size), static_cast<std::int64_t>(limit)},
           [&](const Row& r) { out.push_back(checkpoint_from_row(r)); });
  return out;
}

std::uint64_t AuditLog::size() {
  std::uint64_t pending = 0;
  {
    util::MutexLock lock(pend_mu_);
    pending = written_through_ - folded_through_;
  }
  auto tx = store_.begin(TxMode::read);
  const auto waiting = tx->scalar("SELECT count(*) FROM audit_pending").value_or(0);
  return EntryReader(*tx).size() + pending + static_cast<std::uint64_t>(waiting);
}

namespace {
void require_size(std::uint64_t wanted, std::uint64_t have) {
  if (wanted > have)
    throw Error(ErrorCode::invalid_argument,
                "tree size " + std::to_string(wanted) + " is larger than the log (" + std::to_string(have) + ")");
}

// The openings of entries that commit to their subjects, read a window of
// sequence numbers at a time, and only once an entry in it needs them.
class OpeningsWindow {
 public:
  explicit OpeningsWindow(Transaction& tx) : tx_(tx) {}
  // The openings stored for `seq`, or nullptr.
  const std::vector<std::uint8_t>* of(std::uint64_t seq) {
    const std::uint64_t begin = seq / kWindow * kWindow;
    if (begin != begin_) {
      rows_.clear();
      tx_.exec("SELECT seq, openings FROM audit_subject_openings WHERE seq >= ? AND seq < ?",
               {static_cast<std::int64_t>(begin), static_cast<std::int64_t>(begin + kWindow)},
               [&](const Row& r) { rows_.emplace(static_cast<std::uint64_t>(r.integer(0)), r.blob_copy(1)); });
      begin_ = begin;
    }
    const auto it = rows_.find(seq);
    return it == rows_.end() ? nullptr : &it->second;
  }

 private:
  static constexpr std::uint64_t kWindow = 4096;
  Transaction& tx_;
  std::uint64_t begin_ = ~std::uint64_t{0};
  std::map<std::uint64_t, std::vector<std::uint8_t>> rows_;
};

// The entry of `bytes` (at `seq`), with its subjects' ids and salts if it
// commits to them.
auditfmt::Entry decode_entry(std::uint64_t seq, std::span<const std::uint8_t> bytes, OpeningsWindow& openings) {
  auditfmt::Entry e = auditfmt::decode(bytes);
  if (e.version == auditfmt::kEntryVersionCommitted) {
    if (const auto* o = openings.of(seq)) {
      const char* why = nullptr;
      if (!auditfmt::decode_openings(*o, e.subject_ids, e.subject_salts, &why))
        throw Error(ErrorCode::integrity, std::string("audit log: stored subject openings are malformed: ") + why);
    }
  }
  return e;
}

// A stored entry's view; a stored entry that does not parse is damage.
auditfmt::EntryView view_of(std::uint64_t seq, std::span<const std::uint8_t> bytes) {
  auditfmt::EntryView v;
  const char* why = nullptr;
  if (!auditfmt::parse_view(bytes, v, &why))
    throw Error(ErrorCode::integrity, "audit log: stored entry " + std::to_string(seq) + " is malformed: " + why);
  return v;
}
}  // namespace

Hash AuditLog::root_at(std::uint64_t n) {
  auto tx = store_.begin(TxMode::read);
  require_size(n, EntryReader(*tx).size());
  return auditfmt::root_at(n, subtree_fn(*tx));
}

std::vector<Hash> AuditLog::inclusion_proof(std::uint64_t index, std::uint64_t n) {
  auto tx = store_.begin(TxMode::read);
  require_size(n, EntryReader(*tx).size());
  if (index >= n) throw Error(ErrorCode::invalid_argument, "index must be smaller than the tree size");
  return auditfmt::inclusion_proof(index, n, subtree_fn(*tx));
}

std::vector<Hash> AuditLog::consistency_proof(std::uint64_t first, std::uint64_t second) {
  auto tx = store_.begin(TxMode::read);
  require_size(second, EntryReader(*tx).size());
  if (first > second) throw Error(ErrorCode::invalid_argument, "first must not be larger than second");
  return auditfmt::consistency_proof(first, second, subtree_fn(*tx));
}

std::vector<std::uint8_t> AuditLog::entry_bytes(std::uint64_t seq) {
  auto tx = store_.begin(TxMode::read);
  EntryReader entries(*tx);
  const auto e = entries.at(seq);
  if (!e) throw Error(ErrorCode::not_found, "audit entry " + std::to_string(seq) + " does not exist");
  return {e->begin(), e->end()};
}

std::optional<auditfmt::Entry> AuditLog::entry(std::uint64_t seq) {
  auto tx = store_.begin(TxMode::read);
  EntryReader entries(*tx);
  const auto e = entries.at(seq);
  if (!e) return std::nullopt;
  OpeningsWindow openings(*tx);
  return decode_entry(seq, *e, openings);
}

void AuditLog::scan(Transaction& tx, std::uint64_t first, std::uint64_t last,
                    const std::function<void(std::int64_t at_us, const auditfmt::Entry&)>& fn) {
  if (last < first) return;
  EntryReader entries(tx);
  OpeningsWindow openings(tx);
  entries.range(first, last + 1, [&](std::uint64_t seq, std::span<const std::uint8_t> bytes) {
    const auditfmt::Entry e = decode_entry(seq, bytes, openings);
    fn(parse_time_us(e.time).value_or(0), e);
    return true;
  });
}

namespace {
// Calls `fn(block)` for each completed block from `first_block` on, in
// order, that may hold an entry matching the posting (kind, value) if `kind`
// >= 0, and timed in [from_us, to_us); stops when `fn` returns false.
void candidate_blocks(Transaction& tx, int kind, std::string_view value, std::uint64_t first_block,
                      std::int64_t from_us, std::int64_t to_us, const std::function<bool(std::uint64_t)>& fn) {
  constexpr std::int64_t kPage = 256;
  const std::string sql =
      kind >= 0 ? "SELECT p.block FROM audit_postings p JOIN audit_blocks b ON b.block = p.block"
                  " WHERE p.kind = ? AND p.value = ? AND p.block >= ? AND b.max_at >= ? AND b.min_at < ?"
                  " ORDER BY p.block LIMIT ?"
                : "SELECT block FROM audit_blocks WHERE block >= ? AND max_at >= ? AND min_at < ? ORDER BY block LIMIT ?";
  std::int64_t next = static_cast<std::int64_t>(first_block);
  for (;;) {
    std::vector<std::uint64_t> page;
    const auto add = [&](const Row& r) { page.push_back(static_cast<std::uint64_t>(r.integer(0))); };
    if (kind >= 0)
      tx.exec(sql, {kind, value, next, from_us, to_us, kPage}, add);
    else
      tx.exec(sql, {next, from_us, to_us, kPage}, add);
    for (const std::uint64_t block : page)
      if (!fn(block)) return;
    if (page.size() < static_cast<std::size_t>(kPage)) return;
    next = static_cast<std::int64_t>(page.back()) + 1;
  }
}

// Whether an entry (viewed as `v`) passes the query's filters other than
// its subject.
bool matches(const Query& q, const auditfmt::EntryView& v) {
  if (!q.principal.empty() && v.principal != q.principal) return false;
  if (!q.purpose.empty() && v.purpose != q.purpose) return false;
  if (!q.operation.empty() && v.operation != q.operation) return false;
  if (q.from_us || q.to_us) {
    const std::int64_t at = parse_time_us(v.time).value_or(0);
    if (q.from_us && at < *q.from_us) return false;
    if (q.to_us && at >= *q.to_us) return false;
  }
  return true;
}
}  // namespace

namespace {
// Whether the entry names `subject_id` (as its subject or one it covers).
bool names_subject(const auditfmt::Entry& e, std::string_view subject_id) {
  return e.subject_id == subject_id ||
         std::find(e.subject_ids.begin(), e.subject_ids.end(), subject_id) != e.subject_ids.end();
}
}  // namespace

std::vector<auditfmt::Entry> AuditLog::query(const Query& q) {
  const std::size_t limit = std::min<std::size_t>(q.limit, 10000);
  std::vector<auditfmt::Entry> out;
  if (limit == 0) return out;
  flush();
  auto tx = store_.begin(TxMode::read);
  EntryReader entries(*tx);
  OpeningsWindow openings(*tx);
  const std::uint64_t first_seq = q.after_seq ? *q.after_seq + 1 : 0;
  // Keeps a matching entry; false once the page is full.
  const auto take = [&](std::uint64_t seq, std::span<const std::uint8_t> bytes) {
    if (seq < first_seq || !matches(q, view_of(seq, bytes))) return true;
    out.push_back(decode_entry(seq, bytes, openings));
    return out.size() < limit;
  };
  if (!q.subject_id.empty()) {
    // Three parts in sequence order: entries before the runs' start, by the
    // bucketed index; completed blocks from it on, by the runs; and the open
    // block, read entry by entry (it is not indexed).
    const std::uint64_t runs_from = detail::subject_runs_start(*tx);
    bool more = true;
    if (first_seq < runs_from) {
      // One bucket of the subject index at a time, from the one holding the
      // entry after the cursor; within a bucket the index's order is sequence
      // order, read a page of sequence numbers at a time.
      const std::int64_t first =
          tx->scalar("SELECT max(bucket) FROM audit_subject_buckets WHERE first_seq <= ?",
                     {static_cast<std::int64_t>(first_seq)})
              .value_or(0);
      const std::int64_t last = tx->scalar("SELECT max(bucket) FROM audit_subject_index").value_or(-1);
      constexpr std::int64_t kPage = 512;
      for (std::int64_t b = first; b <= last && more; ++b) {
        std::int64_t after = static_cast<std::int64_t>(first_seq) - 1;
        for (;;) {
          std::vector<std::uint64_t> seqs;
          tx->exec("SELECT seq FROM audit_subject_index WHERE bucket = ? AND subject_id = ? AND seq > ?"
                   " ORDER BY seq LIMIT ?",
                   {b, q.subject_id, after, kPage},
                   [&](const Row& r) { seqs.push_back(static_cast<std::uint64_t>(r.integer(0))); });
          for (const std::uint64_t seq : seqs) {
            const auto bytes = entries.at(seq);
            if (!bytes) throw Error(ErrorCode::integrity, "audit log: indexed entry " + std::to_string(seq) + " is missing");
            if (!(more = take(seq, *bytes))) break;
          }
          if (!more || seqs.size() < static_cast<std::size_t>(kPage)) break;
          after = static_cast<std::int64_t>(seqs.back());
        }
      }
    }
    const std::uint64_t open_start = entries.size() / kBlockEntries * kBlockEntries;
    if (more && open_start > runs_from) {
      std::vector<std::uint64_t> seqs;  // collected first: reading an entry queries the store
      detail::find_subject_in_runs(*tx, q.subject_id, std::max(first_seq, runs_from), [&](std::uint64_t seq) {
        seqs.push_back(seq);
        return seqs.size() < limit - out.size();  // at most a page (some may fail the other filters)
      });
      // Pages until the page is full: a run found past the page is read again.
      while (more && !seqs.empty()) {
        for (const std::uint64_t seq : seqs) {
          const auto bytes = entries.at(seq);
          if (!bytes) throw Error(ErrorCode::integrity, "audit log: indexed entry " + std::to_string(seq) + " is missing");
          if (!(more = take(seq, *bytes))) break;
        }
        if (!more) break;
        const std::uint64_t next = seqs.back() + 1;
        seqs.clear();
        detail::find_subject_in_runs(*tx, q.subject_id, next, [&](std::uint64_t seq) {
          seqs.push_back(seq);
          return seqs.size() < limit - out.size();
        });
      }
    }
    if (more)
      entries.range(std::max({open_start, runs_from, first_seq}), entries.size(),
                    [&](std::uint64_t seq, std::span<const std::uint8_t> bytes) {
                      if (!names_subject(decode_entry(seq, bytes, openings), q.subject_id)) return true;
                      return take(seq, bytes);
                    });
    return out;
  }
  int kind = -1;
  std::string_view value;
  if (!q.principal.empty()) kind = kPostPrincipal, value = q.principal;
  else if (!q.purpose.empty()) kind = kPostPurpose, value = q.purpose;
  else if (!q.operation.empty()) kind = kPostOperation, value = q.operation;
  if (kind < 0 && !q.from_us && !q.to_us) {  // the whole log in sequence order
    entries.range(first_seq, entries.size(), take);
    return out;
  }
  // Completed blocks chosen by their postings and time ranges, then the
  // open block (no postings yet), each filtered entry by entry.
  const std::uint64_t open_start = entries.size() / kBlockEntries * kBlockEntries;
  bool more = true;
  candidate_blocks(*tx, kind, value, first_seq / kBlockEntries, q.from_us.value_or(std::numeric_limits<std::int64_t>::min()),
                   q.to_us.value_or(std::numeric_limits<std::int64_t>::max()), [&](std::uint64_t block) {
                     if (block * kBlockEntries >= open_start) return false;
                     entries.range(block * kBlockEntries, (block + 1) * kBlockEntries,
                                   [&](std::uint64_t seq, std::span<const std::uint8_t> bytes) {
                                     return more = take(seq, bytes);
                                   });
                     return more;
                   });
  if (more) entries.range(std::max(open_start, first_seq), entries.size(), take);
  return out;
}

std::optional<std::pair<std::uint64_t, std::uint64_t>> seq_range_at(Transaction& tx, std::int64_t from_us,
                                                                     std::int64_t to_us) {
  EntryReader entries(tx);
  const std::uint64_t open_start = entries.size() / kBlockEntries * kBlockEntries;
  // The first (or, with `last`, the last) entry of [from, to) timed in the window.
  const auto in_range = [&](bool last, std::uint64_t from, std::uint64_t to) {
    std::optional<std::uint64_t> found;
    entries.range(from, to, [&](std::uint64_t seq, std::span<const std::uint8_t> bytes) {
      const std::int64_t at = parse_time_us(view_of(seq, bytes).time).value_or(0);
      if (at >= from_us && at < to_us) found = seq;
      return last || !found;
    });
    return found;
  };
  // Blocks whose time range meets the window, in order; the first and the
  // last with an entry inside it hold the ends (the open block comes last).
  std::vector<std::uint64_t> blocks;
  candidate_blocks(tx, -1, {}, 0, from_us, to_us, [&](std::uint64_t b) {
    if (b * kBlockEntries < open_start) blocks.push_back(b);
    return true;
  });
  std::optional<std::uint64_t> first, last;
  for (auto it = blocks.begin(); !first && it != blocks.end(); ++it)
    first = in_range(false, *it * kBlockEntries, (*it + 1) * kBlockEntries);
  if (!first) first = in_range(false, open_start, entries.size());
  if (!first) return std::nullopt;
  last = in_range(true, open_start, entries.size());
  for (auto it = blocks.rbegin(); !last && it != blocks.rend(); ++it)
    last = in_range(true, *it * kBlockEntries, (*it + 1) * kBlockEntries);
  return std::pair{*first, *last};
}

void AuditLog::export_to(std::ostream& out) {
  // The export ends at a signed tree head: entries appended after it (by
  // another thread, between the checkpoint and the read transaction) belong
  // to the next export, so every exported entry is covered by a checkpoint.
  const std::uint64_t n = checkpoint_now().size;
  auto tx = store_.begin(TxMode::read);
  const auto cps = tx->scalar("SELECT count(*) FROM audit_checkpoints WHERE size <= ?",
                              {static_cast<std::int64_t>(n)});
  auditfmt::ExportHeader header;
  header.origin = options_.origin;
  header.key_name = options_.key_name;
  header.public_key_fingerprint = auditfmt::fingerprint(signer_.public_key());
  header.first_seq = 0;
  header.entry_count = n;
  header.checkpoint_count = static_cast<std::uint64_t>(cps.value_or(0));
  header.created = format_time_us(options_.now_us());
  auditfmt::ExportWriter writer(out, header);
  // Checkpoints first, so a verifier knows every signed size before the entries reach it.
  tx->exec("SELECT note FROM audit_checkpoints WHERE size <= ? ORDER BY size", {static_cast<std::int64_t>(n)},
           [&](const Row& r) { writer.add_checkpoint(r.text(0)); });
  // Each entry that commits to its subjects is followed by its openings (an
  // `S` record): the auditor is entitled to the whole log, ids included, and
  // checks them against the commitment (FORMAT.md §3).
  EntryReader entries(*tx);
  OpeningsWindow openings(*tx);
  entries.range(0, n, [&](std::uint64_t seq, std::span<const std::uint8_t> bytes) {
    writer.add_entry(bytes);
    if (!bytes.empty() && bytes[0] == auditfmt::kEntryVersionCommitted)
      if (const auto* o = openings.of(seq)) writer.add_openings(*o);
    return true;
  });
  writer.finish();
}

// ---- The journal of read entries ----------------------------------------

namespace {
constexpr char kFoldedKey[] = "audit_journal_folded";
// Folds are rare and large on purpose: every commit makes each reader
// connection drop its page cache (SQLite's WAL change check), and SQLCipher
// then decrypts those pages again. Queries, checkpoints and exports fold on
// demand, so the delay never hides an entry from an auditor.
constexpr std::size_t kMaxFoldBatch = 50000;  // entries per fold transaction
// How often the folder looks for another process's fold request, and how
// long that process waits for the fold.
constexpr auto kFoldRequestPoll = std::chrono::milliseconds(100);
constexpr auto kForeignFoldWait = std::chrono::seconds(30);
constexpr auto kFullWait = std::chrono::seconds(5);

std::uint64_t folded_watermark(store::Store& store) {
  std::uint64_t out = 0;
  auto tx = store.begin(TxMode::read);
  if (const auto v = store::meta_value(*tx, kFoldedKey)) out = std::strtoull(v->c_str(), nullptr, 10);
  return out;
}
}  // namespace

namespace {
// A journal record over the entry limit can only be a leftover of a version
// that journaled entries unbounded; refusing it would stall every fold, and
// dropping it would lose a read. Its caller-supplied text is replaced as a
// new entry's would be, which brings it back under the limit. Nothing when
// the record fits as it is (every record this version writes).
std::optional<std::vector<std::uint8_t>> refitted(std::span<const std::uint8_t> record) {
  if (record.size() <= auditfmt::kMaxEntryBytes || record[0] == kWrapped) return std::nullopt;
  auditfmt::Entry e = auditfmt::decode(record);
  keep_to_names_and_ids(e);
  return auditfmt::encode(e);
}
}  // namespace

void AuditLog::place_record(Transaction& tx, std::span<std::uint8_t> record, Unwritten& unwritten,
                            const std::function<std::string()>& name) {
  // Only this vault writes journal records, and only entries it built: a
  // record that opens (or, in the pending table, is there) yet is no entry
  // was written by something else holding the key or the database. That is
  // an integrity failure (the vault refuses it), not a bug of ours to report
  // as internal.
  const auto not_an_entry = [&](const char* why) {
    return Error(ErrorCode::integrity, name() + " is not a well-formed entry (" + why + ")");
  };
  try {
    std::optional<std::vector<std::uint8_t>> refit = refitted(record);
    const auto [bytes, openings] = unwrap(refit ? std::span<std::uint8_t>(*refit) : record);
    add_leaf(tx, bytes, openings, &unwritten);
  } catch (const Error& e) {
    if (e.code() != ErrorCode::internal) throw;
    throw not_an_entry(e.what());
  } catch (const std::runtime_error& e) {  // auditfmt's decode and placement
    throw not_an_entry(e.what());
  } catch (const std::invalid_argument& e) {
    throw not_an_entry(e.what());
  }
}

std::uint64_t AuditLog::fold_records(std::vector<JournalRecord> batch) {
  return fail_closed([&] {
    // Durable (fsync) before the journal space is reused: otherwise a power
    // cut could lose entries from both the store and the journal.
    auto tx = store_.begin_durable();
    {
      util::MutexLock lock(mu_);
      load_head(*tx);
      // Each block the batch completes is stored as one row; the entries of
      // the block left open get rows of their own at the end.
      Unwritten unwritten;
      for (auto& r : batch)
        place_record(*tx, r.payload, unwritten, [&] {
          return "audit journal record " + std::to_string(r.counter) + " opens under the journal key but";
        });
      store_unwritten(*tx, unwritten);
    }
    // The watermark commits with the entries: after a crash, recovery folds
    // exactly the records beyond it.
    const std::string counter = std::to_string(batch.back().counter);
    store::set_meta_value(*tx, kFoldedKey, counter);
    tx->commit();
    return batch.back().counter;
  });
}

std::uint64_t AuditLog::fold_leftovers(Journal& journal) {
  util::MutexLock fold_lock(fold_mu_);
  const std::uint64_t watermark = folded_watermark(store_);
  Journal::Recovery left = journal.recover(watermark);
  // Counters run without gaps from the watermark; a gap is records lost to
  // damage (or removed), and goes into the log itself.
  std::vector<JournalRecord> contiguous;
  std::string lost;
  std::size_t gaps = 0;
  std::uint64_t expected = watermark + 1;
  for (auto& r : left.records) {
    if (r.counter < expected) continue;
    if (r.counter > expected && ++gaps <= 10)
      lost += (lost.empty() ? "" : ",") + std::to_string(expected) + "-" + std::to_string(r.counter - 1);
    expected = r.counter + 1;
    contiguous.push_back(std::move(r));
  }
  std::uint64_t last = watermark;
  for (std::size_t i = 0; i < contiguous.size(); i += kMaxFoldBatch) {
    const auto from = contiguous.begin() + static_cast<std::ptrdiff_t>(i);
    const auto to = contiguous.begin() + static_cast<std::ptrdiff_t>(std::min(contiguous.size(), i + kMaxFoldBatch));
    last = fold_records(std::vector<JournalRecord>(std::make_move_iterator(from), std::make_move_iterator(to)));
  }
  if (gaps || !left.damaged.empty()) {
    std::string detail = "missing counters: " + (lost.empty() ? std::string("none") : lost);
    if (gaps > 10) detail += " (+" + std::to_string(gaps - 10) + " more gaps)";
    detail += "; set aside (records from the damage on unreadable):";
    for (const auto& name : left.damaged) detail += " " + name;
    append_now({"system:custos", "system", "", "", ""}, {"audit.journal_damaged", "", {}, {}, true, "", detail});
  }
  return last;
}

bool AuditLog::enable_journal(const std::filesystem::path& dir, const crypto::SecretKey& key, JournalOptions options) {
  if (journal_on_) return true;
  auto journal = Journal::open(dir, key, options);
  if (!journal) return false;
  const std::uint64_t last = fold_leftovers(*journal);
  journal->start(last + 1);
  {
    util::MutexLock lock(pend_mu_);
    journal_ = std::move(journal);
    written_through_ = folded_through_ = last;
    fold_interval_ = std::chrono::milliseconds(std::max<std::int64_t>(1, options.fold_interval_ms));
    stop_folder_ = false;
  }
  folder_ = std::thread([this] { fold_loop(); });
  journal_on_.store(true, std::memory_order_release);
  return true;
}

void AuditLog::recover_journal(const std::filesystem::path& dir, const crypto::SecretKey& key) {
  if (journal_on_ || !std::filesystem::exists(dir)) return;
  if (auto journal = Journal::open(dir, key, {})) {
    fold_leftovers(*journal);
  } else {  // a live process holds it and folds it itself
    foreign_journal_ = dir;
    foreign_key_ = std::make_unique<crypto::SecretKey>(key.clone());
  }
}

void AuditLog::append_journaled(const Actor& actor, const std::vector<Event>& events) {
  // Entries are encoded outside the lock; only their time is set under it,
  // so journal order is time order.
  std::vector<std::vector<std::uint8_t>> drafts(events.size());
  const std::int64_t drafted_at = options_.now_us();
  const std::string drafted_time = format_time_us(drafted_at);
  for (std::size_t i = 0; i < events.size(); ++i) {
    // Sized (require_fits) here: a journaled record the fold could never place would stall it.
    Drafted d = encode_draft(actor, events[i], drafted_time);
    drafts[i] = journal_payload(std::move(d.bytes), d.openings);
  }
  const auto deadline = std::chrono::steady_clock::now() + kFullWait;
  util::MutexLock lock(pend_mu_);
  for (;;) {
    const std::string now = format_time_us(std::max(drafted_at, options_.now_us()));
    for (std::size_t i = 0; i < drafts.size(); ++i) {
      if (now.size() == drafted_time.size()) {
        auditfmt::set_time(unwrap(drafts[i]).first, now);
      } else {  // a clock past year 9999: the time's length changed
        Drafted d = encode_draft(actor, events[i], now);
        drafts[i] = journal_payload(std::move(d.bytes), d.openings);
      }
    }
    const std::optional<std::uint64_t> first = journal_->append(drafts);
    if (first) {
      const bool was_idle = written_through_ == folded_through_;
      written_through_ = *first + drafts.size() - 1;
      if (!fold_now_ && journal_->half_full()) fold_now_ = true;
      // Prepare the next segment before this one is full, so no reader waits for it.
      const bool spare = !spare_wanted_ && !spare_failed_ && journal_->wants_spare();
      if (spare) spare_wanted_ = true;
      if (was_idle || fold_now_ || spare) pend_cv_.notify_all();
      return;
    }
    // Every segment holds entries not yet folded: wait for the folder while it is healthy.
    if (!fold_error_.empty())
      throw Error(ErrorCode::audit_unavailable, "audit log cannot be written: " + fold_error_);
    if (std::chrono::steady_clock::now() >= deadline)
      throw Error(ErrorCode::audit_unavailable, "audit journal is full and its entries are not being folded");
    fold_now_ = true;
    pend_cv_.notify_all();
    pend_cv_.wait_until(lock, deadline);
  }
}

void AuditLog::fold_pending(bool everything) {
  util::MutexLock fold_lock(fold_mu_);
  std::uint64_t target = 0;
  {
    util::MutexLock lock(pend_mu_);
    target = written_through_;
  }
  for (;;) {
    std::uint64_t first = 0, last = 0;
    Journal::View view;
    {
      util::MutexLock lock(pend_mu_);
      first = folded_through_ + 1;
      if (first > target) return;
      last = std::min<std::uint64_t>(target, first + kMaxFoldBatch - 1);
      view = journal_->view();
    }
    try {
      fold_records(Journal::read(view, first, last));  // decrypts outside the lock
    } catch (const std::exception& e) {
      util::MutexLock lock(pend_mu_);
      fold_error_ = e.what();
      pend_cv_.notify_all();
      throw Error(ErrorCode::audit_unavailable, std::string("audit log cannot be written: ") + e.what());
    }
    {
      util::MutexLock lock(pend_mu_);
      folded_through_ = last;
      fold_error_.clear();
      journal_->release_through(last);
    }
    pend_cv_.notify_all();
    if (!everything) return;
  }
}

void AuditLog::flush() {
  // Whoever folded (this thread, the folder thread, the journal's owning
  // process) committed after a read snapshot this thread may hold began:
  // the reads after a flush must see the folded entries.
  struct SeeTheFold {
    store::Store& store;
    ~SeeTheFold() { store.end_shared_reads(); }
  } see_the_fold{store_};
  if (journal_on_.load(std::memory_order_acquire)) {
    fold_pending(true);
    return;
  }
  fold_pending_table(true);
  if (!foreign_key_) return;
  // The other process folds at its own interval (it may be minutes): ask it
  // to fold now, and wait for its watermark to pass the newest record it had
  // written when we asked. A log shown without them would look complete.
  const auto newest = Journal::newest_counter(foreign_journal_, *foreign_key_);
  if (!newest || folded_watermark(store_) >= *newest) return;
  Journal::request_fold(foreign_journal_);
  const auto deadline = std::chrono::steady_clock::now() + kForeignFoldWait;
  while (folded_watermark(store_) < *newest) {
    if (auto journal = Journal::open(foreign_journal_, *foreign_key_, {})) {  // the owner has gone
      fold_leftovers(*journal);
      return;
    }
    if (std::chrono::steady_clock::now() >= deadline)
      throw Error(ErrorCode::audit_unavailable,
                  "audit log incomplete: the running custosd has not folded the entries it journaled within " +
                      std::to_string(kForeignFoldWait.count()) + " s (its /healthz shows the fold's error)");
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

JournalStatus AuditLog::journal_status() {
  JournalStatus s;
  if (pending_on_.load(std::memory_order_acquire)) {
    try {
      auto tx = store_.begin(TxMode::read);
      s.pending = static_cast<std::uint64_t>(tx->scalar("SELECT count(*) FROM audit_pending").value_or(0));
    } catch (const std::exception&) {
      // The store is away: the fold's error says so.
    }
  }
  util::MutexLock lock(pend_mu_);
  s.active = journal_ != nullptr || pending_on_.load(std::memory_order_acquire);
  if (journal_) s.pending = written_through_ - folded_through_;
  s.fold_error = fold_error_;
  return s;
}

void AuditLog::fold_loop() {
  util::MutexLock lock(pend_mu_);
  // A fold is due one interval after the first entry it will carry arrived,
  // or at once when asked (journal half full, or full, or another process
  // wants to read the log: Journal::request_fold, looked for every
  // kFoldRequestPoll). Folds go first: a fold frees whole segments, a spare
  // only saves a read the wait.
  constexpr auto kNotDue = std::chrono::steady_clock::time_point::max();
  auto fold_due = kNotDue;
  auto next_request_check = std::chrono::steady_clock::now();
  bool requested = false;  // another process asked (Journal::request_fold): fold everything
  const auto try_spare = [&]() CUSTOS_REQUIRES(pend_mu_) {
    try {
      journal_->prepare_spare(pend_mu_);  // drops pend_mu_ while it writes
      spare_failed_ = false;
    } catch (...) {
      // Not again before the next fold; a read needing a segment tries
      // itself and fails closed if it must.
      spare_failed_ = true;
    }
  };
  while (!stop_folder_) {
    auto now = std::chrono::steady_clock::now();
    if (now >= next_request_check) {
      next_request_check = now + kFoldRequestPoll;
      if (journal_->take_fold_request()) requested = true;
    }
    if (fold_now_ || requested || now >= fold_due) {
      const bool everything = requested;
      const std::uint64_t target = written_through_;
      fold_now_ = requested = false;
      fold_due = kNotDue;
      lock.unlock();
      bool failed = false;
      try {
        fold_pending(everything);
      } catch (...) {
        failed = true;  // kept in fold_error_; the records stay in the journal
      }
      lock.lock();
      // One batch per turn (a spare may be due between them), but a backlog
      // that was due does not wait another interval.
      if (!failed && folded_through_ < target) fold_now_ = true;
      spare_wanted_ = false;
      try_spare();
      if (failed) pend_cv_.wait_for(lock, std::chrono::milliseconds(100), [&]() CUSTOS_REQUIRES(pend_mu_) { return stop_folder_; });
      continue;
    }
    if (spare_wanted_) {
      spare_wanted_ = false;
      try_spare();
      continue;
    }
    if (fold_due == kNotDue && written_through_ > folded_through_) fold_due = now + fold_interval_;
    const auto woken = [&]() CUSTOS_REQUIRES(pend_mu_) {
      return stop_folder_ || fold_now_ || spare_wanted_ || (fold_due == kNotDue && written_through_ > folded_through_);
    };
    pend_cv_.wait_until(lock, std::min(fold_due, next_request_check), woken);
  }
}

// ---- The pending table (a shared database's journal) ---------------------

void AuditLog::enable_pending_table(std::chrono::milliseconds fold_interval, std::uint64_t max_waiting) {
  if (pending_on_ || journal_on_) return;
  std::array<unsigned char, 16> id;
  randombytes_buf(id.data(), id.size());
  static constexpr char kHex[] = "0123456789abcdef";
  pending_stream_.clear();
  for (const unsigned char b : id) pending_stream_ += {kHex[b >> 4], kHex[b & 15]};
  {
    util::MutexLock lock(pend_mu_);
    fold_interval_ = std::max(fold_interval, std::chrono::milliseconds(1));
    pending_max_waiting_ = std::max<std::uint64_t>(max_waiting, 1);
    stop_folder_ = false;
  }
  pending_on_.store(true, std::memory_order_release);
  folder_ = std::thread([this] { pending_fold_loop(); });
}

void AuditLog::insert_pending(const std::vector<Waiter*>& batch, std::uint64_t first, std::int64_t at_us) {
  const std::string time = format_time_us(at_us);
  std::vector<std::vector<std::uint8_t>> payloads;
  for (const Waiter* w : batch)
    for (const Event& e : *w->events) {
      Drafted d = encode_draft(*w->actor, e, time);
      payloads.push_back(journal_payload(std::move(d.bytes), d.openings));
    }
  {
    util::MutexLock lock(pend_mu_);
    if (!fold_error_.empty() && pending_waiting_ + payloads.size() > pending_max_waiting_)
      throw Error(ErrorCode::audit_unavailable, "audit log cannot be written: " + std::to_string(pending_waiting_) +
                                                    " entries of this node wait in audit_pending and folding fails: " +
                                                    fold_error_);
  }
  // No writers' lock: a long write (or a fold) never holds up a read. The
  // rows travel with the COMMIT (one round trip on PostgreSQL).
  auto tx = store_.begin(TxMode::insert_only);
  for (std::size_t i = 0; i < payloads.size(); ++i)
    tx->exec_deferred("INSERT INTO audit_pending (stream, counter, at, payload) VALUES (?, ?, ?, ?)",
                      {pending_stream_, static_cast<std::int64_t>(first + i), at_us, store::Blob(payloads[i])});
  tx->commit();
  util::MutexLock lock(pend_mu_);
  pending_waiting_ += payloads.size();
}

std::size_t AuditLog::fold_pending_rows() {
  util::MutexLock fold_lock(fold_mu_);
  return fail_closed([&]() -> std::size_t {
    auto tx = store_.begin(TxMode::write);
    // The rows taken, their payloads back to back in one buffer: a vector
    // and a stream name per row were three heap allocations each, and with
    // their page faults a quarter of the fold's CPU on PostgreSQL.
    struct Taken {
      std::size_t stream;  // in `streams`
      std::int64_t counter;
      std::size_t at, size;  // in `payloads`
    };
    std::vector<std::string> streams;  // distinct: one per process that inserted
    std::vector<Taken> rows;
    std::vector<std::uint8_t> payloads;
    tx->exec("SELECT stream, counter, payload FROM audit_pending ORDER BY at, stream, counter LIMIT ?",
             {static_cast<std::int64_t>(kMaxFoldBatch)}, [&](const Row& r) {
               const std::string_view stream = r.text(0);
               std::size_t s = 0;
               while (s < streams.size() && streams[s] != stream) ++s;
               if (s == streams.size()) streams.emplace_back(stream);
               const store::Blob payload = r.blob(2);
               rows.push_back({s, r.integer(1), payloads.size(), payload.size()});
               payloads.insert(payloads.end(), payload.begin(), payload.end());
             });
    if (rows.empty()) return 0;
    // Per stream: the last counter taken and how many rows.
    std::vector<std::pair<std::int64_t, std::int64_t>> taken(streams.size());
    {
      util::MutexLock lock(mu_);
      load_head(*tx);
      Unwritten unwritten;
      for (const Taken& r : rows) {
        place_record(*tx, std::span<std::uint8_t>(payloads).subspan(r.at, r.size), unwritten, [&] {
          return "audit pending entry " + streams[r.stream].substr(0, 32) + "/" + std::to_string(r.counter);
        });
        auto& [last, count] = taken[r.stream];
        last = std::max(last, r.counter);
        ++count;
      }
      store_unwritten(*tx, unwritten);
    }
    // A stream's rows commit in counter order with non-decreasing times, so
    // the rows taken are each stream's first ones: deleting by counter
    // removes exactly them. If it removed more, a row committed out of that
    // order (it would be lost): undo the whole fold.
    for (std::size_t s = 0; s < streams.size(); ++s) {
      const std::int64_t removed =
          tx->exec("DELETE FROM audit_pending WHERE stream = ? AND counter <= ?", {streams[s], taken[s].first});
      if (removed != taken[s].second)
        throw Error(ErrorCode::audit_unavailable, "audit pending entries of one stream changed while being folded");
    }
    tx->commit();
    return rows.size();
  });
}

void AuditLog::fold_pending_table(bool everything) {
  // What another node committed after this thread's read snapshot began must be seen.
  store_.end_shared_reads();
  {
    auto tx = store_.begin(TxMode::read);
    if (tx->scalar("SELECT count(*) FROM (SELECT 1 FROM audit_pending LIMIT 1) AS any_pending").value_or(0) == 0)
      return;
  }
  // Bounded: readers on every node keep inserting while this folds.
  constexpr int kMaxBatches = 64;
  for (int i = 0; i < kMaxBatches; ++i)
    if (fold_pending_rows() < kMaxFoldBatch || !everything) return;
}

void AuditLog::pending_fold_loop() {
  util::MutexLock lock(pend_mu_);
  while (!stop_folder_) {
    pend_cv_.wait_for(lock, fold_interval_, [&]() CUSTOS_REQUIRES(pend_mu_) { return stop_folder_; });
    if (stop_folder_) break;
    lock.unlock();
    std::string error;
    try {
      fold_pending_table(true);
    } catch (const std::exception& e) {
      error = e.what();  // the rows stay in the table; the next fold tries again
    }
    lock.lock();
    fold_error_ = error;
    if (error.empty()) pending_waiting_ = 0;
  }
}

AuditLog::~AuditLog() {
  if (!folder_.joinable()) return;
  {
    util::MutexLock lock(pend_mu_);
    stop_folder_ = true;
  }
  pend_cv_.notify_all();
  folder_.join();
  try {
    if (pending_on_.load(std::memory_order_acquire))
      fold_pending_table(true);
    else
      fold_pending(true);
  } catch (...) {
    // Still in the journal, or the pending table: the next open (or any node) folds it.
  }
}

}  // namespace custos::audit
