# xgrammar's C++ core (Apache-2.0, https://github.com/mlc-ai/xgrammar): the grammar engine of
# structured output. ./phi bootstrap unpacks its PyPI sdist (pinned by sha256) into the
# git-ignored third_party/ and applies our fixes, tools/deps/patches/xgrammar-<version>-*.patch;
# it is built here as part of our build, as the static target `xgrammar`, without its Python
# bindings.
set(PHI_XGRAMMAR_VERSION 0.2.9)

# The folder's name carries the patch set's hash, as ./phi's xgrammar_dir computes it: the
# sha256 of the patches concatenated in name order, first 12 hex digits. A changed patch set
# names a folder bootstrap has not made yet, so configure asks for it instead of building an
# unpatched or stale tree.
file(GLOB _phi_xgrammar_patches LIST_DIRECTORIES false
     ${PROJECT_SOURCE_DIR}/tools/deps/patches/xgrammar-${PHI_XGRAMMAR_VERSION}-*.patch)
list(SORT _phi_xgrammar_patches)
set(_phi_xgrammar_patch_text "")
foreach(_patch IN LISTS _phi_xgrammar_patches)
  file(READ ${_patch} _text)
  string(APPEND _phi_xgrammar_patch_text "${_text}")
endforeach()
string(SHA256 _phi_xgrammar_patch_sum "${_phi_xgrammar_patch_text}")
string(SUBSTRING ${_phi_xgrammar_patch_sum} 0 12 _phi_xgrammar_patch_sum)
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS
             ${PROJECT_SOURCE_DIR}/tools/deps/patches ${_phi_xgrammar_patches})
unset(PHI_XGRAMMAR_SOURCE_DIR CACHE)  # a cache entry of older builds named the unpatched tree
set(PHI_XGRAMMAR_SOURCE_DIR
    ${PROJECT_SOURCE_DIR}/third_party/xgrammar-${PHI_XGRAMMAR_VERSION}-p${_phi_xgrammar_patch_sum})
if(NOT EXISTS ${PHI_XGRAMMAR_SOURCE_DIR}/CMakeLists.txt)
  message(FATAL_ERROR
    "xgrammar ${PHI_XGRAMMAR_VERSION} source not found in ${PHI_XGRAMMAR_SOURCE_DIR}: "
    "run ./phi bootstrap (it downloads the pinned PyPI sdist, unpacks it and applies "
    "tools/deps/patches)")
endif()

# xgrammar's CMakeLists reads ${CMAKE_BINARY_DIR}/config.cmake before the sdist's own
# cmake/config.cmake (which turns the Python bindings on); CMAKE_BINARY_DIR is our top build
# folder here. Its CMakeLists prepends -Werror -flto=auto to CMAKE_CXX_FLAGS in its own
# directory scope: the flags appended here come later and win, so a newer compiler's new
# warning cannot break the build and no LTO bytecode reaches our links.
file(CONFIGURE OUTPUT ${CMAKE_BINARY_DIR}/config.cmake @ONLY CONTENT [=[
# Written by cmake/xgrammar.cmake: options of the xgrammar subproject.
set(XGRAMMAR_BUILD_PYTHON_BINDINGS OFF)
set(XGRAMMAR_BUILD_CXX_TESTS OFF)
set(XGRAMMAR_ENABLE_CPPTRACE OFF)
set(XGRAMMAR_ENABLE_COVERAGE OFF)
set(XGRAMMAR_ENABLE_INTERNAL_CHECK OFF)
set(CMAKE_CXX_FLAGS "${CMAKE_CXX_FLAGS} -fno-lto -Wno-error")
]=])

# SYSTEM: its headers are outside our -Wall -Wextra -Werror; EXCLUDE_FROM_ALL: built only
# when something links it.
add_subdirectory(${PHI_XGRAMMAR_SOURCE_DIR} ${CMAKE_BINARY_DIR}/third_party/xgrammar
                 EXCLUDE_FROM_ALL SYSTEM)
