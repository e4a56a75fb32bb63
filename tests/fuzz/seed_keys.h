// The verifier key of the vault tests/fuzz/make_corpus.py made the seed corpus
// with (its exports, checkpoint notes and entries). Regenerated with the corpus.
#pragma once

#include <string_view>

namespace custos::fuzz {
inline constexpr std::string_view kSeedVaultVkey = "custos.local+6ee6b282+ASKYozdqZclPtbVT1V6IF+lOj2zL8MEnEejgR37gdCTp";
}  // namespace custos::fuzz
