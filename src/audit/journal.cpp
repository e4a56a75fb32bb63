#include "custos/audit/journal.h"

#include <fcntl.h>
#include <sodium.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <string>

#include "custos/audit/journal_file_system.h"
#include "custos/error.h"
#include "custos_audit/entry.h"

namespace custos::audit {
namespace fs = std::filesystem;

namespace {

class PosixJournalFileSystem final : public JournalFileSystem {
 public:
  int open(const char* path, int flags, mode_t mode) override { return ::open(path, flags, mode); }
  int allocate(int fd, off_t bytes) override { return ::posix_fallocate(fd, 0, bytes); }
  int sync(int fd) override { return ::fsync(fd); }
  int rename(const char* from, const char* to) override { return ::rename(from, to); }
  int remove(const char* path) override { return ::unlink(path); }
};

std::atomic<JournalFileSystem*> test_file_system{nullptr};

JournalFileSystem& file_system() {
  JournalFileSystem* fs = test_file_system.load(std::memory_order_acquire);
  return fs ? *fs : posix_journal_file_system();
}

// Segment layout (all integers little-endian):
//   [0, 8)    magic "CUSTOSAJ"
//   [8]       format version (1)
//   [9]       sealing algorithm (1 AES-256-GCM, 2 ChaCha20-Poly1305-IETF)
//   [16, 32)  file id (random per activation)
//   [32, 40)  counter of the first record
//   [4096, …) records: u32 ciphertext length, ciphertext (payload + 16-byte tag);
//             a zero length ends the segment.
constexpr std::size_t kHeaderBytes = 4096;
constexpr std::size_t kTagBytes = 16;
constexpr char kMagic[8] = {'C', 'U', 'S', 'T', 'O', 'S', 'A', 'J'};
constexpr std::uint8_t kVersion = 1;
constexpr std::uint8_t kAesGcm = 1;
constexpr std::uint8_t kChaCha = 2;
constexpr std::size_t kSparesKept = 2;
using FileId = std::array<std::uint8_t, 16>;

[[noreturn]] void fail(const std::string& what) {
  throw Error(ErrorCode::audit_unavailable, "audit journal: " + what + ": " + std::strerror(errno));
}

// Little-endian integers in the journal's own framing (not the entry format).
template <typename T>
void put_le(std::uint8_t* p, T v) {
  for (std::size_t i = 0; i < sizeof(T); ++i) p[i] = static_cast<std::uint8_t>(v >> (8 * i));
}
template <typename T>
T get_le(const std::uint8_t* p) {
  T v = 0;
  for (std::size_t i = sizeof(T); i-- > 0;) v = static_cast<T>((v << 8) | p[i]);
  return v;
}
void put_u32(std::uint8_t* p, std::uint32_t v) { put_le(p, v); }
void put_u64(std::uint8_t* p, std::uint64_t v) { put_le(p, v); }
std::uint32_t get_u32(const std::uint8_t* p) { return get_le<std::uint32_t>(p); }
std::uint64_t get_u64(const std::uint8_t* p) { return get_le<std::uint64_t>(p); }

// Seals records of one segment: key = BLAKE2b(journal key; label || file id),
// nonce = the record's counter, associated data = the segment header's first
// kBoundHeaderBytes (magic, version, algorithm, file id, first counter).
constexpr std::size_t kBoundHeaderBytes = 40;
using BoundHeader = std::array<std::uint8_t, kBoundHeaderBytes>;

class Sealer {
 public:
  explicit Sealer(const crypto::SecretKey& journal_key, const std::uint8_t* header)
      : algorithm_(header[9]), key_(derive(journal_key, header + 16)) {
    std::memcpy(header_.data(), header, header_.size());
    if (algorithm_ == kAesGcm) {
      if (!crypto_aead_aes256gcm_is_available())
        throw Error(ErrorCode::audit_unavailable, "audit journal: segment sealed with AES-GCM, which this CPU lacks");
      aes_ = static_cast<crypto_aead_aes256gcm_state*>(sodium_malloc(sizeof(crypto_aead_aes256gcm_state)));
      if (!aes_) throw Error(ErrorCode::internal, "out of secure memory");
      crypto_aead_aes256gcm_beforenm(aes_, key_.data());
    } else if (algorithm_ != kChaCha) {
      throw Error(ErrorCode::integrity, "audit journal: unknown sealing algorithm");
    }
  }
  ~Sealer() {
    if (aes_) sodium_free(aes_);  // sodium_free wipes
  }
  Sealer(const Sealer&) = delete;
  Sealer& operator=(const Sealer&) = delete;

  static std::uint8_t preferred() { return crypto_aead_aes256gcm_is_available() ? kAesGcm : kChaCha; }

  // Writes payload.size() + kTagBytes bytes at `out`.
  void seal(std::uint64_t counter, std::span<const std::uint8_t> payload, std::uint8_t* out) const {
    std::array<std::uint8_t, 12> nonce{};
    put_u64(nonce.data(), counter);
    unsigned long long len = 0;
    if (algorithm_ == kAesGcm)
      crypto_aead_aes256gcm_encrypt_afternm(out, &len, payload.data(), payload.size(), header_.data(),
                                            header_.size(), nullptr, nonce.data(), aes_);
    else
      crypto_aead_chacha20poly1305_ietf_encrypt(out, &len, payload.data(), payload.size(), header_.data(),
                                                header_.size(), nullptr, nonce.data(), key_.data());
  }

  bool open(std::uint64_t counter, std::span<const std::uint8_t> sealed, std::vector<std::uint8_t>& out) const {
    if (sealed.size() < kTagBytes) return false;
    std::array<std::uint8_t, 12> nonce{};
    put_u64(nonce.data(), counter);
    out.resize(sealed.size() - kTagBytes);
    unsigned long long len = 0;
    const int rc =
        algorithm_ == kAesGcm
            ? crypto_aead_aes256gcm_decrypt_afternm(out.data(), &len, nullptr, sealed.data(), sealed.size(),
                                                    header_.data(), header_.size(), nonce.data(), aes_)
            : crypto_aead_chacha20poly1305_ietf_decrypt(out.data(), &len, nullptr, sealed.data(), sealed.size(),
                                                        header_.data(), header_.size(), nonce.data(), key_.data());
    return rc == 0;
  }

 private:
  static crypto::SecretKey derive(const crypto::SecretKey& journal_key, const std::uint8_t* file_id) {
    static constexpr char kLabel[] = "custos audit journal segment v1";
    std::array<std::uint8_t, sizeof kLabel - 1 + 16> msg{};
    std::memcpy(msg.data(), kLabel, sizeof kLabel - 1);
    std::memcpy(msg.data() + sizeof kLabel - 1, file_id, 16);
    std::array<std::uint8_t, crypto::SecretKey::kSize> out{};
    crypto_generichash(out.data(), out.size(), msg.data(), msg.size(), journal_key.data(), crypto::SecretKey::kSize);
    crypto::SecretKey key = crypto::SecretKey::from_bytes(out);
    sodium_memzero(out.data(), out.size());
    return key;
  }

  std::uint8_t algorithm_;
  BoundHeader header_{};
  crypto::SecretKey key_;
  crypto_aead_aes256gcm_state* aes_ = nullptr;
};

// The sealed length of the record at `off`: 0 where the records end (a zero
// length; a record's length is written last) or where the framing is
// broken (`broken` set: a length past the segment or shorter than a tag).
std::uint32_t sealed_length_at(const std::uint8_t* map, std::size_t size, std::size_t off, bool& broken) {
  broken = false;
  if (off + 4 > size) return 0;
  const std::uint32_t len = get_u32(map + off);
  if (len != 0 && (len < kTagBytes || off + 4 + len > size)) broken = true;
  return broken ? 0 : len;
}

// The bound part of a segment header.
BoundHeader make_header(std::uint8_t algorithm, const FileId& file_id, std::uint64_t first_counter) {
  BoundHeader h{};
  std::memcpy(h.data(), kMagic, sizeof kMagic);
  h[8] = kVersion;
  h[9] = algorithm;
  std::memcpy(h.data() + 16, file_id.data(), file_id.size());
  put_u64(h.data() + 32, first_counter);
  return h;
}

}  // namespace

JournalFileSystem& posix_journal_file_system() {
  static PosixJournalFileSystem posix;
  return posix;
}

void set_journal_file_system_for_testing(JournalFileSystem* file_system) {
  test_file_system.store(file_system, std::memory_order_release);
}

struct Journal::Segment {
  fs::path path;
  int fd = -1;
  std::uint8_t* map = nullptr;
  std::size_t size = 0;
  std::uint64_t first_counter = 0;
  std::uint64_t last_counter = 0;  // 0: no record yet
  std::size_t offset = kHeaderBytes;
  std::unique_ptr<Sealer> sealer;

  ~Segment() {
    if (map) ::munmap(map, size);
    if (fd >= 0) ::close(fd);
  }

  // Maps an open segment file of `bytes` bytes.
  void map_file(std::size_t bytes) {
    size = bytes;
    void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) fail("cannot map " + path.filename().string());
    map = static_cast<std::uint8_t*>(p);
  }
};

Journal::Journal(fs::path dir, int lock_fd, const crypto::SecretKey& key, JournalOptions options)
    : dir_(std::move(dir)), lock_fd_(lock_fd), key_(key.clone()), options_(options) {}

Journal::~Journal() {
  segments_.clear();
  if (lock_fd_ >= 0) ::close(lock_fd_);  // releases the flock
}

std::unique_ptr<Journal> Journal::open(const fs::path& dir, const crypto::SecretKey& key, JournalOptions options) {
  if (options.segment_bytes < 2 * kHeaderBytes) options.segment_bytes = 2 * kHeaderBytes;
  // One segment stays current until it is full, so a journal needs two to
  // take records while the other is folded.
  if (options.max_segments < 2) options.max_segments = 2;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw Error(ErrorCode::audit_unavailable, "audit journal: cannot create " + dir.string() + ": " + ec.message());
  ::chmod(dir.c_str(), 0700);
  const int fd = ::open((dir / "LOCK").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) fail("cannot open its lock file");
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    ::close(fd);
    if (err == EWOULDBLOCK) return nullptr;
    errno = err;
    fail("cannot lock");
  }
  std::unique_ptr<Journal> j(new Journal(dir, fd, key, options));
  // Map every segment an earlier process left, in file order.
  std::vector<fs::path> files;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
    if (it->path().extension() == ".aj") files.push_back(it->path());
  if (ec) throw Error(ErrorCode::audit_unavailable, "audit journal: cannot list " + dir.string() + ": " + ec.message());
  std::sort(files.begin(), files.end());
  for (const auto& path : files) {
    auto seg = std::make_unique<Segment>();
    seg->path = path;
    seg->fd = file_system().open(path.c_str(), O_RDWR | O_CLOEXEC, 0);
    if (seg->fd < 0) fail("cannot open " + path.filename().string());
    struct stat st {};
    if (::fstat(seg->fd, &st) != 0) fail("cannot stat " + path.filename().string());
    if (static_cast<std::size_t>(st.st_size) < 2 * kHeaderBytes) {
      file_system().remove(path.c_str());  // a segment whose creation did not finish
      continue;
    }
    seg->map_file(static_cast<std::size_t>(st.st_size));
    const std::string stem = path.stem().string();  // segment-000042
    const auto dash = stem.rfind('-');
    if (dash != std::string::npos)
      j->next_file_number_ = std::max<std::uint64_t>(j->next_file_number_, std::strtoull(stem.c_str() + dash + 1, nullptr, 10) + 1);
    j->segments_.push_back(std::move(seg));
  }
  return j;
}

Journal::Recovery Journal::recover(std::uint64_t after) {
  Recovery out;
  std::vector<Segment*> damaged;
  for (auto& seg : segments_) {
    const std::uint8_t* h = seg->map;
    if (std::memcmp(h, kMagic, sizeof kMagic) != 0 || h[8] != kVersion) continue;  // never activated
    std::unique_ptr<Sealer> sealer;
    try {
      sealer = std::make_unique<Sealer>(key_, h);
    } catch (const Error&) {
      damaged.push_back(seg.get());  // an algorithm this build or CPU cannot open
      continue;
    }
    std::uint64_t counter = get_u64(h + 32);
    std::size_t off = kHeaderBytes;
    for (;;) {
      bool broken = false;
      const std::uint32_t len = sealed_length_at(seg->map, seg->size, off, broken);
      JournalRecord r;
      if (broken || (len && !sealer->open(counter, {seg->map + off + 4, len}, r.payload))) {
        damaged.push_back(seg.get());  // altered, or torn by a power cut
        break;
      }
      if (len == 0) break;
      r.counter = counter;
      if (counter > after) out.records.push_back(std::move(r));
      ++counter;
      off += 4 + len;
    }
  }
  std::sort(out.records.begin(), out.records.end(), [](const auto& a, const auto& b) { return a.counter < b.counter; });
  // Set damaged segments aside for inspection; they are never reused.
  for (Segment* seg : damaged) {
    const fs::path aside = seg->path.string() + ".damaged";
    out.damaged.push_back(seg->path.filename().string());
    file_system().rename(seg->path.c_str(), aside.c_str());
    segments_.erase(std::find_if(segments_.begin(), segments_.end(), [&](const auto& p) { return p.get() == seg; }));
  }
  return out;
}

namespace {
constexpr const char* kFoldRequestFile = "fold-request";
}  // namespace

void Journal::request_fold(const fs::path& dir) {
  const int fd = ::open((dir / kFoldRequestFile).c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0)
    throw Error(ErrorCode::audit_unavailable, "audit journal: cannot ask its owner to fold (" +
                                                  std::string(std::strerror(errno)) + ")");
  ::close(fd);
}

bool Journal::take_fold_request() const { return ::unlink((dir_ / kFoldRequestFile).c_str()) == 0; }

std::optional<std::uint64_t> Journal::newest_counter(const fs::path& dir, const crypto::SecretKey& key) {
  std::optional<std::uint64_t> newest;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    if (it->path().extension() != ".aj") continue;
    const int fd = ::open(it->path().c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;
    struct stat st {};
    void* p = MAP_FAILED;
    if (::fstat(fd, &st) == 0 && static_cast<std::size_t>(st.st_size) >= 2 * kHeaderBytes)
      p = ::mmap(nullptr, static_cast<std::size_t>(st.st_size), PROT_READ, MAP_SHARED, fd, 0);
    ::close(fd);
    if (p == MAP_FAILED) continue;
    const auto* map = static_cast<const std::uint8_t*>(p);
    const std::size_t size = static_cast<std::size_t>(st.st_size);
    if (std::memcmp(map, kMagic, sizeof kMagic) == 0 && map[8] == kVersion) {
      // Walk the lengths (a length is written after its record), then make
      // sure the last record opens under this segment's key.
      std::uint64_t counter = get_u64(map + 32);
      std::size_t off = kHeaderBytes, last_off = 0;
      std::uint32_t last_len = 0;
      bool broken = false;
      for (std::uint32_t len; (len = sealed_length_at(map, size, off, broken)) != 0;) {
        last_off = off;
        last_len = len;
        ++counter;
        off += 4 + len;
      }
      if (last_len) {
        try {
          const Sealer sealer(key, map);
          std::vector<std::uint8_t> payload;
          if (sealer.open(counter - 1, {map + last_off + 4, last_len}, payload))
            newest = std::max(newest.value_or(0), counter - 1);
        } catch (const Error&) {
          // an algorithm this process cannot open: not counted
        }
      }
    }
    ::munmap(p, size);
  }
  return newest;
}

void Journal::start(std::uint64_t next) {
  next_counter_ = std::max<std::uint64_t>(next, 1);
  current_ = nullptr;
  sealed_.clear();
  spares_.clear();
  // Only segments of the configured size are reused: every later space
  // check assumes it.
  for (auto it = segments_.begin(); it != segments_.end();) {
    if ((*it)->size != options_.segment_bytes) {
      file_system().remove((*it)->path.c_str());
      it = segments_.erase(it);
    } else {
      spares_.push_back(it->get());
      ++it;
    }
  }
  // The first read should not wait for a segment to be created and faulted
  // in. If it cannot be created now, that read tries again and fails closed.
  if (spares_.empty() && segments_.size() < options_.max_segments) {
    try {
      add_spare(make_spare(next_file_number_++));
    } catch (const Error&) {
    }
  }
}

void Journal::prepare_spare(util::Mutex& caller_mu) {
  if (!spares_.empty() || segments_.size() >= options_.max_segments) return;
  const std::uint64_t number = next_file_number_++;
  caller_mu.unlock();
  std::unique_ptr<Segment> seg;
  try {
    seg = make_spare(number);
  } catch (...) {
    caller_mu.lock();
    throw;
  }
  caller_mu.lock();
  add_spare(std::move(seg));
}

bool Journal::wants_spare() const {
  return spares_.empty() && segments_.size() < options_.max_segments && current_ &&
         current_->offset > current_->size / 2;
}

std::unique_ptr<Journal::Segment> Journal::make_spare(std::uint64_t file_number) const {
  auto seg = std::make_unique<Segment>();
  char name[40];
  std::snprintf(name, sizeof name, "segment-%06llu.aj", static_cast<unsigned long long>(file_number));
  seg->path = dir_ / name;
  seg->fd = file_system().open(seg->path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (seg->fd < 0) fail("cannot create " + seg->path.filename().string());
  // Reserve every block now: a full disk fails here, never inside a read's copy.
  if (const int rc = file_system().allocate(seg->fd, static_cast<off_t>(options_.segment_bytes)); rc != 0) {
    ::close(seg->fd);
    seg->fd = -1;
    file_system().remove(seg->path.c_str());
    errno = rc;
    fail("cannot reserve " + std::to_string(options_.segment_bytes) + " bytes");
  }
  seg->map_file(options_.segment_bytes);
  // Fault every page in writable now, so a read's copy never takes a page fault.
  const long page = ::sysconf(_SC_PAGESIZE) > 0 ? ::sysconf(_SC_PAGESIZE) : 4096;
  for (std::size_t off = 0; off < seg->size; off += static_cast<std::size_t>(page))
    reinterpret_cast<volatile std::uint8_t*>(seg->map)[off] = 0;
  if (const int dfd = file_system().open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0); dfd >= 0) {
    file_system().sync(dfd);
    ::close(dfd);
  }
  return seg;
}

void Journal::add_spare(std::unique_ptr<Segment> segment) {
  if (segments_.size() >= options_.max_segments) {  // a read created one meanwhile
    file_system().remove(segment->path.c_str());
    return;
  }
  spares_.push_back(segment.get());
  segments_.push_back(std::move(segment));
}

Journal::Segment& Journal::activate_spare() {
  Segment& seg = *spares_.back();
  FileId file_id;
  randombytes_buf(file_id.data(), file_id.size());
  const BoundHeader header = make_header(Sealer::preferred(), file_id, next_counter_);
  auto sealer = std::make_unique<Sealer>(key_, header.data());  // may throw: nothing changed yet
  spares_.pop_back();
  seg.sealer = std::move(sealer);
  seg.first_counter = next_counter_;
  seg.last_counter = 0;
  seg.offset = kHeaderBytes;
  // The old records die first (zero length), then the header names the new file id.
  put_u32(seg.map + kHeaderBytes, 0);
  std::atomic_signal_fence(std::memory_order_seq_cst);
  std::memset(seg.map, 0, 64);
  std::memcpy(seg.map, header.data(), header.size());
  return seg;
}

std::optional<std::uint64_t> Journal::append(std::span<const std::vector<std::uint8_t>> payloads) {
  std::size_t need = 4;  // the terminator after the last record
  for (const auto& p : payloads) {
    // Every record becomes a log entry when folded: one the log would refuse
    // is refused here, before anything is written, or it would stall every fold.
    // A record is an entry, or an entry with its subject openings (each part
    // within the log's limit, plus a 5-byte wrapper; AuditLog).
    if (p.size() > kMaxJournalRecordBytes)
      throw Error(ErrorCode::invalid_argument, "audit journal: an entry of " + std::to_string(p.size()) +
                                                   " bytes is over the journal's limit of " +
                                                   std::to_string(kMaxJournalRecordBytes));
    need += 4 + p.size() + kTagBytes;
  }
  if (need > options_.segment_bytes - kHeaderBytes)
    throw Error(ErrorCode::audit_unavailable, "audit journal: entries too large for one segment");
  if (!current_ || current_->offset + need > current_->size) {
    if (spares_.empty()) {
      if (segments_.size() >= options_.max_segments) return std::nullopt;
      add_spare(make_spare(next_file_number_++));
    }
    Segment& next = activate_spare();
    if (current_) (current_->last_counter ? sealed_ : spares_).push_back(current_);
    current_ = &next;
  }
  Segment& seg = *current_;
  const std::uint64_t first = next_counter_;
  for (const auto& p : payloads) {
    std::uint8_t* at = seg.map + seg.offset;
    const std::size_t sealed = p.size() + kTagBytes;
    seg.sealer->seal(next_counter_, p, at + 4);
    put_u32(at + 4 + sealed, 0);  // the new end
    // The length goes last: a crash before it leaves the old end in place.
    std::atomic_signal_fence(std::memory_order_seq_cst);
    put_u32(at, static_cast<std::uint32_t>(sealed));
    seg.offset += 4 + sealed;
    seg.last_counter = next_counter_++;
  }
  return first;
}

Journal::View Journal::view() const {
  View v;
  for (const Segment* seg : sealed_) v.parts.push_back({seg, seg->first_counter, seg->last_counter});
  if (current_ && current_->last_counter)
    v.parts.push_back({current_, current_->first_counter, current_->last_counter});
  return v;
}

std::vector<JournalRecord> Journal::read(const View& view, std::uint64_t first, std::uint64_t last) {
  std::vector<JournalRecord> out;
  if (last < first) return out;
  out.reserve(static_cast<std::size_t>(last - first + 1));
  for (const auto& part : view.parts) {
    if (part.last < first || part.first > last) continue;
    const Segment& seg = *part.segment;
    std::size_t off = kHeaderBytes;
    for (std::uint64_t counter = part.first; counter <= std::min(last, part.last); ++counter) {
      bool broken = false;
      const std::uint32_t len = sealed_length_at(seg.map, seg.size, off, broken);
      if (len == 0)
        throw Error(ErrorCode::integrity, "audit journal: record " + std::to_string(counter) + " is damaged");
      if (counter >= first) {
        JournalRecord r;
        r.counter = counter;
        if (!seg.sealer->open(counter, {seg.map + off + 4, len}, r.payload))
          throw Error(ErrorCode::integrity, "audit journal: record " + std::to_string(counter) + " does not open");
        out.push_back(std::move(r));
      }
      off += 4 + len;
    }
  }
  if (out.size() != last - first + 1)
    throw Error(ErrorCode::internal, "audit journal: records " + std::to_string(first) + "-" + std::to_string(last) +
                                         " are not all in the journal");
  return out;
}

void Journal::release_through(std::uint64_t counter) {
  while (!sealed_.empty() && sealed_.front()->last_counter <= counter) {
    spares_.push_back(sealed_.front());
    sealed_.erase(sealed_.begin());
  }
  // Give back disk beyond a few spares (after a burst).
  while (spares_.size() > kSparesKept) {
    Segment* seg = spares_.front();
    spares_.erase(spares_.begin());
    const fs::path path = seg->path;
    segments_.erase(std::find_if(segments_.begin(), segments_.end(), [&](const auto& s) { return s.get() == seg; }));
    file_system().remove(path.c_str());
  }
}

}  // namespace custos::audit
