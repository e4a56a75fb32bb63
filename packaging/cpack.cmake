# The Debian package: `cmake --build build --target package` or, in the build
# directory, `cpack -G DEB`. Installs under /usr: bin/custos, bin/custosd,
# bin/custos-audit, share/custos/policies, lib/systemd/system/custosd.service,
# the man pages and share/doc/custos. Library dependencies are computed by
# dpkg-shlibdeps from the binaries, so the package installs with apt on any
# Debian 12 machine. tests/packaging_test.sh checks the contents.
set(CPACK_PACKAGE_NAME custos)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_VENDOR "Custos")
set(CPACK_PACKAGE_CONTACT "Custos maintainers <custos-maintainers@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "customer-data vault: encrypted personal data, consent, DSRs, audit log")
set(CPACK_PACKAGE_DESCRIPTION
    "Custos stores the personal data of CRM customers encrypted per field, lets each caller see only what "
    "its role, purpose and the subject's consent allow, runs GDPR/CCPA data-subject requests and keeps a "
    "tamper-evident audit log with an offline verifier (custos-audit).")
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION admin)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
# libpq5: loaded at run time by the PostgreSQL backend, so dpkg-shlibdeps cannot see it.
set(CPACK_DEBIAN_PACKAGE_DEPENDS "adduser, tzdata, libpq5")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${CMAKE_CURRENT_LIST_DIR}/debian/postinst ${CMAKE_CURRENT_LIST_DIR}/debian/postrm)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
include(CPack)
