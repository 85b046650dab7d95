# ctest fixture install.stage: a fresh `cmake --install` of the build tree
# into STAGE, as a packager stages one: DESTDIR=STAGE, --prefix PREFIX.
# DESTDIR rather than --prefix STAGE alone: the nbdkit plugin installs into
# nbdkit's own plugin directory, an absolute path (tools/nbdkit), which
# --prefix does not move; without DESTDIR the test would write into the
# system's nbdkit.
#   cmake -DBUILD=<build tree> -DSTAGE=<dir> -DPREFIX=/prefix -P stage.cmake
file(REMOVE_RECURSE ${STAGE})
execute_process(
  COMMAND ${CMAKE_COMMAND} -E env DESTDIR=${STAGE} ${CMAKE_COMMAND} --install ${BUILD} --prefix ${PREFIX}
  TIMEOUT 300
  RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "cmake --install into ${STAGE} failed: ${rc}")
endif()
