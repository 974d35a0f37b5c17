# Unit tests of the library's internal modules and its failure handling
# (error strings, buffers, file I/O, crc32c, deque, record codec, segment scan,
# on-disk damage, fault injection).
# Included by tests/CMakeLists.txt; every test links hopper_internal.
hopper_add_test(test_error SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_error.c
                LABELS unit TIMEOUT 60)
hopper_add_test(test_buf SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_buf.c
                LABELS unit TIMEOUT 60)
hopper_add_test(test_fsio SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_fsio.c
                LABELS unit TIMEOUT 60)
hopper_add_test(test_crc32c SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_crc32c.c
                LABELS unit TIMEOUT 60)
hopper_add_test(test_deque SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_deque.c
                LABELS unit TIMEOUT 60)
hopper_add_test(test_record SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_record.c
                LABELS unit TIMEOUT 60)
hopper_add_test(test_segment SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_segment.c
                LABELS unit TIMEOUT 60)
# test_damage also regenerates the checked-in fixtures of tests/data/bad/:
#   test_damage --write-fixtures <dir>
hopper_add_test(test_damage SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_damage.c
                LABELS unit TIMEOUT 120)
hopper_add_test(test_fault SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_fault.c
                LABELS unit TIMEOUT 180)
# Fallback for running test_damage by hand (ctest sets HOPPER_TEST_DATA).
target_compile_definitions(test_damage PRIVATE
  HP_TEST_DATA_DIR="${CMAKE_CURRENT_SOURCE_DIR}/data")
# The queue's own files: the two-slot checkpoint (tests/data/golden/ has a
# version-1 queue), leftovers, and the disk budget counting every file.
hopper_add_test(test_files SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_files.c
                LABELS unit TIMEOUT 60)
target_compile_definitions(test_files PRIVATE HP_TEST_DATA_DIR="${CMAKE_CURRENT_SOURCE_DIR}/data")
