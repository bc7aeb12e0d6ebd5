"""The classic exercise's tests, which live in project_tests.py, collected here with the rest of the suite so
that the fixtures of conftest.py reach them (pytest does not collect them from project_tests.py itself)."""
import project_tests

test_load_vgg = project_tests.test_load_vgg
test_load_vgg_calls_the_loader_as_the_classic_test_expects = \
    project_tests.test_load_vgg_calls_the_loader_as_the_classic_test_expects
test_layers = project_tests.test_layers
test_optimize = project_tests.test_optimize
test_train_nn = project_tests.test_train_nn
test_for_kitti_dataset = project_tests.test_for_kitti_dataset
