// custos_audit/verify.h — the auditor's checks, trusting nothing but a public key.
#pragma once

#include <cstdint>
#include <istream>
#include <string>
#include <string_view>

namespace custos::auditfmt {

struct VerifyResult {
  bool ok = false;
  std::string error;    // the first problem: "entry 17: ..." or "checkpoint 2: ..."
  std::string summary;  // "ok: entries=N checkpoints=C size=S root=<hex>"
  std::uint64_t entries = 0;
  std::uint64_t checkpoints = 0;
};

// Verifies an export (export.h) against the verifier key `vkey`
// (checkpoint.h): every checkpoint signature; every entry's structure,
// sequence number and link to its predecessor; every checkpoint root
// recomputed from the entries; consistency between successive checkpoints;
// and that a signed checkpoint covers every entry. See FORMAT.md §4.
VerifyResult verify_export(std::istream& in, std::string_view vkey);

// Verifies an inclusion bundle (FORMAT.md §5): the checkpoint's signature,
// its size against tree_size, and the inclusion proof of the entry.
VerifyResult verify_inclusion_bundle(std::string_view bundle_json, std::string_view vkey);

}  // namespace custos::auditfmt
