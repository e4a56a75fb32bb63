// Fuzz target: export and bundle parsing in the auditor's verifier
// (audit/include/custos_audit/export.h, verify.h), as custos-audit runs it.
//
// Input: byte 0 picks the parser, the rest is its input:
//   0 verify_export (an export file; byte 1 bit 0: allow_empty), and the
//     streaming reader read_export on the same bytes, decoding every entry
//   1 verify_inclusion_bundle (an inclusion bundle, FORMAT.md §5)
//   2 verify_package (a DSR access package)
//   3 verify_consistency_files (u16 length of `older`, older, newer)
// The verifier key is the seed vault's (seed_keys.h), so the real exports of
// the corpus verify and mutations of them reach every check.
// Invariants: nothing throws (verify.h: "None throws"); a result is ok with
// a summary and no error, or not ok with an error; read_export agrees with
// verify_export on a verified export's entry and checkpoint counts; every
// entry of a verified export decodes and re-encodes to its own bytes.
#include <cstdint>
#include <sstream>
#include <stdexcept>

#include "custos_audit/checkpoint.h"
#include "custos_audit/entry.h"
#include "custos_audit/export.h"
#include "custos_audit/verify.h"
#include "fuzz_support.h"
#include "seed_keys.h"

namespace af = custos::auditfmt;

namespace {

void check_result(const af::VerifyResult& r) {
  if (r.ok) {
    FUZZ_CHECK(r.error.empty(), "an ok result carries an error");
    FUZZ_CHECK(!r.summary.empty(), "an ok result has no summary");
  } else {
    FUZZ_CHECK(!r.error.empty(), "a failed result says nothing");
  }
}

void fuzz_export(std::string_view bytes, bool allow_empty) {
  const std::string text(bytes);
  std::istringstream in(text);
  af::VerifyOptions options;
  options.allow_empty = allow_empty;
  const af::VerifyResult r = af::verify_export(in, custos::fuzz::kSeedVaultVkey, options);
  check_result(r);

  std::istringstream again(text);
  std::uint64_t entries = 0, checkpoints = 0;
  bool entries_canonical = true;
  af::ExportVisitor v;
  v.on_header = [](const af::ExportHeader&) { return true; };
  v.on_checkpoint = [&](std::string_view note) {
    ++checkpoints;
    try {
      (void)af::parse_and_verify_checkpoint_vkey(note, custos::fuzz::kSeedVaultVkey);
    } catch (const std::runtime_error&) {
    }
    return true;
  };
  v.on_entry = [&](std::span<const std::uint8_t> entry) {
    ++entries;
    try {
      const auto encoded = af::encode(af::decode(entry));
      if (!std::equal(encoded.begin(), encoded.end(), entry.begin(), entry.end())) entries_canonical = false;
    } catch (const std::runtime_error&) {
      entries_canonical = false;
    }
    return true;
  };
  v.on_openings = [](std::span<const std::uint8_t>) { return true; };
  std::string error;
  const bool read_ok = af::read_export(again, v, error);
  FUZZ_CHECK(read_ok || !error.empty(), "read_export failed without saying why");
  if (r.ok) {
    FUZZ_CHECK(read_ok, "verify_export accepted what read_export refuses: " + error);
    FUZZ_CHECK(entries == r.entries && checkpoints == r.checkpoints, "entry or checkpoint counts differ");
    FUZZ_CHECK(entries_canonical, "a verified export holds an entry that is not canonical");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  custos::fuzz::InputReader in(data, size);
  switch (in.byte() % 4) {
    case 0: {
      const bool allow_empty = in.byte() & 1;
      fuzz_export(in.rest(), allow_empty);
      break;
    }
    case 1:
      check_result(af::verify_inclusion_bundle(in.rest(), custos::fuzz::kSeedVaultVkey));
      break;
    case 2: {
      std::istringstream package{std::string(in.rest())};
      check_result(af::verify_package(package, custos::fuzz::kSeedVaultVkey));
      break;
    }
    case 3: {
      const std::size_t older_size = in.u16();
      std::istringstream older{std::string(in.take(older_size))};
      std::istringstream newer{std::string(in.rest())};
      check_result(af::verify_consistency_files(older, newer, custos::fuzz::kSeedVaultVkey));
      break;
    }
  }
  return 0;
}
