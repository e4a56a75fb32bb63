// `custos backup`, `custos backup verify` and `custos restore`.
#include "cli_common.h"
#include "custos/service/backup.h"

namespace custos::cli {
namespace {

struct OpsOptions {
  std::string out;
  std::string file;
  std::string target_dir;
  std::string master_key_dir;
};

}  // namespace

void add_ops_commands(CLI::App& app, Globals& g, Action& action) {
  auto o = std::make_shared<OpsOptions>();

  auto* backup = app.add_subcommand(
      "backup", "online, consistent backup of the vault while custosd serves (master-key files are not included)");
  backup->add_option("--out", o->out, "backup file to write (mode 0600)");
  backup->callback([&action, &g, o, backup] {
    if (backup->get_subcommands().empty() && o->out.empty())
      throw CLI::RequiredError("--out");
    if (!backup->get_subcommands().empty()) return;
    action = [&g, o] {
      service::BackupOptions b;
      b.data_dir = g.data_dir;
      b.passphrase = g.passphrase();
      b.out = o->out;
      print(service::backup_vault(b));
      return 0;
    };
  });
  auto* verify = backup->add_subcommand("verify", "check a backup's digests; with the key, open it and check the audit root");
  verify->add_option("file", o->file, "backup file")->required();
  verify->add_option("--master-key-dir", o->master_key_dir,
                     "directory holding master-<version>.key (default <data-dir>/keys if it exists)");
  verify->callback([&action, &g, o] {
    action = [&g, o] {
      service::RestoreOptions r;
      r.archive = o->file;
      r.master_key_dir = o->master_key_dir;
      if (r.master_key_dir.empty() && fs::is_directory(fs::path(g.data_dir) / "keys"))
        r.master_key_dir = fs::path(g.data_dir) / "keys";
      r.passphrase = g.passphrase();
      print(service::verify_backup(r));
      return 0;
    };
  });

  auto* restore = app.add_subcommand("restore", "restore a backup into a new, empty data directory and check it");
  restore->add_option("file", o->file, "backup file")->required();
  restore->add_option("--data-dir", o->target_dir, "the new data directory (must not exist or be empty)");
  restore->add_option("--master-key-dir", o->master_key_dir,
                      "directory holding the vault's master-<version>.key files (key-file vaults)");
  restore->callback([&action, &g, o] {
    action = [&g, o] {
      service::RestoreOptions r;
      r.archive = o->file;
      r.data_dir = o->target_dir.empty() ? fs::path(g.data_dir) : fs::path(o->target_dir);
      r.master_key_dir = o->master_key_dir;
      r.passphrase = g.passphrase();
      print(service::restore_vault(r));
      return 0;
    };
  });
}

}  // namespace custos::cli
