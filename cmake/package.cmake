# The installed CMake package and pkg-config file (included by src/, where
# the library targets are). Both are relocatable: they find the prefix from
# where they were installed, so `cmake --install --prefix P` (or DESTDIR)
# needs no reconfigure.
include(CMakePackageConfigHelpers)
set(VHDX_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/vhdx)
# Two export sets: vhdx-config.cmake always loads the shared library's, and
# the static library's only when the private dependencies it needs at link
# time (fmt, Threads, ext2fs/com_err/blkid) are found on the user's system.
install(EXPORT vhdx-targets NAMESPACE vhdx:: DESTINATION ${VHDX_CMAKE_DIR})
install(EXPORT vhdx-static-targets NAMESPACE vhdx:: DESTINATION ${VHDX_CMAKE_DIR})
configure_package_config_file(${CMAKE_CURRENT_LIST_DIR}/vhdx-config.cmake.in
  ${CMAKE_BINARY_DIR}/package/vhdx-config.cmake
  INSTALL_DESTINATION ${VHDX_CMAKE_DIR})
# 0.x: a minor release may change the API (the SONAME tracks the ABI).
write_basic_package_version_file(${CMAKE_BINARY_DIR}/package/vhdx-config-version.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_BINARY_DIR}/package/vhdx-config.cmake
  ${CMAKE_BINARY_DIR}/package/vhdx-config-version.cmake
  DESTINATION ${VHDX_CMAKE_DIR})

# vhdx.pc: the prefix relative to the .pc file's own directory (${pcfiledir},
# known to pkg-config and pkgconf), unless the install directories are
# absolute.
set(VHDX_PC_DIR ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
if(IS_ABSOLUTE ${VHDX_PC_DIR})
  set(VHDX_PC_PREFIX ${CMAKE_INSTALL_PREFIX})
else()
  file(RELATIVE_PATH VHDX_PC_UP /root/${VHDX_PC_DIR} /root)
  set(VHDX_PC_PREFIX "\${pcfiledir}/${VHDX_PC_UP}")
endif()
foreach(dir LIBDIR INCLUDEDIR)
  if(IS_ABSOLUTE ${CMAKE_INSTALL_${dir}})
    set(VHDX_PC_${dir} ${CMAKE_INSTALL_${dir}})
  else()
    set(VHDX_PC_${dir} "\${prefix}/${CMAKE_INSTALL_${dir}}")
  endif()
endforeach()
configure_file(${CMAKE_CURRENT_LIST_DIR}/vhdx.pc.in ${CMAKE_BINARY_DIR}/package/vhdx.pc @ONLY)
install(FILES ${CMAKE_BINARY_DIR}/package/vhdx.pc DESTINATION ${VHDX_PC_DIR})
